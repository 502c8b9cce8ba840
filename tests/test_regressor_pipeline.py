"""regressor_flash as users run it: train.py -> evaluate.py -> convert.py on simulated TrackML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.checkpoint import load_checkpoint

from .conftest import ONE_THREAD, SHARED, require, run_entrypoint

TINY = [
    "model=regressor_flash",
    "data=trackml",
    "data.simulation.n_events=10",
    "data.simulation.n_particles=300",
    "data.subevents_per_event={train: 12, val: 4, test: 4}",
    "data.batch_size=8",
    "model.dim=32",
    "model.layers=2",
    "model.heads=4",
    "model.ffn=64",
    "model.attention.layout=packed",
    "model.clustering.n_jobs=1",
    "model.scan.min_cluster_size=[3,5]",
    "model.scan.min_samples=[1,2]",
    "model.scan.q_scale=[1.0]",
    "model.val_score_events=4",
    "trainer.max_epochs=5",
    "trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("regressor_run")
    run_entrypoint("train.py", *TINY, cwd=cwd, env={"HEPEXP_RUN_ID": "reg", **ONE_THREAD})
    return cwd


@pytest.mark.slow
def test_train_scans_clustering_and_evaluates(run: Path) -> None:
    out = run / "logs/train/runs/reg"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/trackml_score", "test/double_majority", "val/trackml_score"):
        assert 0 <= metrics[key] <= 1, key
    # trained for real (measured, trained / untrained (lr 0), [with seed=1]): the TrackML score
    # (0.78 [0.75] / 0.63 [0.63]: clustering even random outputs finds some tracks) ...
    assert metrics["test/trackml_score"] > 0.7
    # ... and the regressed track parameters (theta 0.14 [0.15] / 0.31 [0.54],
    # sin phi 0.18 [0.13] / 0.46 [1.09], cos phi 0.16 [0.14] / 0.41 [0.75])
    assert metrics["test/residual_sigma68_theta"] < 0.23
    assert metrics["test/residual_sigma68_sin_phi"] < 0.3
    assert metrics["test/residual_sigma68_cos_phi"] < 0.3
    scan = pd.read_csv(out / "clustering_scan.csv")
    assert len(scan) == 4 and (out / "clustering_scan.png").exists()
    assert (out / "clustering_scan.pdf").exists()
    best = scan.iloc[scan.score.idxmax()]
    ckpt = load_checkpoint(out / "checkpoints/best.ckpt")
    assert ckpt["state_dict"]["cluster_params"].tolist() == [
        best.min_cluster_size,
        best.min_samples,
        1.0,
    ]
    assert metrics["test/min_cluster_size"] == int(best.min_cluster_size)
    for plot in ("efficiency", "residuals", "event_display"):
        for suffix in (".png", ".pdf"):
            assert (out / "evaluation" / (plot + suffix)).exists(), plot + suffix


@pytest.mark.slow
def test_evaluate_reproduces_and_overrides_clustering(run: Path) -> None:
    ckpt = run / "logs/train/runs/reg/checkpoints/best.ckpt"
    run_entrypoint(
        "evaluate.py", f"ckpt_path={ckpt}", cwd=run, env={"HEPEXP_RUN_ID": "ev", **ONE_THREAD}
    )
    metrics = json.loads((run / "logs/evaluate/runs/ev/metrics.json").read_text())
    after_train = json.loads((run / "logs/train/runs/reg/evaluation/metrics.json").read_text())
    assert metrics["trackml_score"] == pytest.approx(after_train["trackml_score"], abs=1e-9)
    assert metrics["n_events"] == 4
    run_entrypoint(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        "+model.clustering.min_cluster_size=9",
        cwd=run,
        env={"HEPEXP_RUN_ID": "ev9", **ONE_THREAD},
    )
    metrics9 = json.loads((run / "logs/evaluate/runs/ev9/metrics.json").read_text())
    assert metrics9["min_cluster_size"] == 9
    assert metrics9["min_samples"] == metrics["min_samples"], "the other stored value is kept"


@pytest.mark.slow
def test_convert_writes_predictions_and_submission(run: Path) -> None:
    ckpt = run / "logs/train/runs/reg/checkpoints/best.ckpt"
    source = next((run / "data/trackml/simulated").iterdir())
    out = run / "converted"
    proc = run_entrypoint(
        "convert.py",
        f"ckpt_path={ckpt}",
        f"input={source}",
        f"output={out}",
        "+options.nevents=2",
        cwd=run,
        env=ONE_THREAD,
    )
    assert "trackml_score" in proc.stdout + proc.stderr
    sub = pd.read_csv(out / "submission.csv")
    pred = pd.read_csv(out / "predictions.csv")
    assert list(sub.columns) == ["event_id", "hit_id", "track_id"]
    assert list(pred.columns) == ["event_id", "hit_id", "theta", "sin_phi", "cos_phi", "q"]
    assert sub.event_id.nunique() == 2 and len(sub) == len(pred)
    hits = pd.read_csv(next(source.glob("event*-hits.csv*")))
    first = sub[sub.event_id == sub.event_id.min()]
    assert set(first.hit_id) == set(hits.hit_id), "every hit of the event gets a track"
    assert (sub.track_id >= 0).all()
    assert np.isfinite(pred[["theta", "sin_phi", "cos_phi", "q"]].to_numpy()).all()


@pytest.mark.slow
def test_real_event_as_subevents(run: Path) -> None:
    """A model trained only on simulation, scored on the real event cut into TML sub-events."""
    real = SHARED / "data" / "trackml"
    require((real / "event000000001-hits.csv.gz").exists(), f"{real} holds no real TrackML event")
    ckpt = run / "logs/train/runs/reg/checkpoints/best.ckpt"
    run_entrypoint(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        f"data.source={real}",
        "data.splits={train: 0, val: 0, test: 1}",
        "+data.subevents_per_event={test: 5}",
        cwd=run,
        env={"HEPEXP_RUN_ID": "real", **ONE_THREAD},
    )
    metrics = json.loads((run / "logs/evaluate/runs/real/metrics.json").read_text())
    assert metrics["n_events"] == 5
    # better than untrained on real hits too (measured, trained / untrained (lr 0)): score
    # 0.75 / 0.60, sigma68 of theta 0.14 / 0.28, sin phi 0.20 / 0.46, cos phi 0.18 / 0.47
    assert metrics["trackml_score"] > 0.68
    assert metrics["residual_sigma68_theta"] < 0.22
    assert metrics["residual_sigma68_sin_phi"] < 0.3
    assert metrics["residual_sigma68_cos_phi"] < 0.3


def test_checkpoint_loading_needs_no_pickle(tmp_path: Path) -> None:
    from hepexp.models.regressor import TransformerRegressor

    model = TransformerRegressor(dim=16, layers=1, heads=2, ffn=16)
    model.cluster_params.copy_(torch.tensor([6, 3, 0.5]))
    path = tmp_path / "m.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    state = torch.load(path, weights_only=True)["state_dict"]
    fresh = TransformerRegressor(dim=16, layers=1, heads=2, ffn=16)
    fresh.load_state_dict(state)
    assert fresh.cluster_settings() == {"min_cluster_size": 6, "min_samples": 3, "q_scale": 0.5}
