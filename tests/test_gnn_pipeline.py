"""model=interaction_gnn end to end: train.py -> evaluate.py -> convert.py on tiny events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.checkpoint import build_model
from hepexp.data.trackml.io import load_event
from hepexp.errors import ConfigError
from hepexp.metrics.trackml import score_event
from hepexp.run.common import model_from_checkpoint

from .conftest import ONE_THREAD, run_entrypoint

#: 16 training, 2 validation and 2 test events of ~140 particles: dense enough that a GNN
#: which does not tell edges apart builds poor tracks
TINY = [
    "model=interaction_gnn",
    "data=trackml",
    "data.simulation.n_events=20",
    "data.simulation.n_particles=150",
    "model.hidden=16",
    "model.n_iterations=2",
    "model.filter.epochs=1",
    "model.filter.hidden=16",
    "model.optimizer.lr=1e-2",
    "trainer.max_epochs=5",
    "trainer.accelerator=cpu",
    "data.prepare_workers=1",  # no process pool for 20 tiny events
]


@pytest.fixture(scope="module")
def gnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("gnn_run")
    run_entrypoint("train.py", *TINY, cwd=cwd, env={"HEPEXP_RUN_ID": "gnn", **ONE_THREAD})
    return cwd


@pytest.mark.slow
def test_train_caches_stages_and_evaluates(gnn_run: Path) -> None:
    run = gnn_run / "logs/train/runs/gnn"
    stages = sorted(p.name.split("-")[0] for p in (gnn_run / "data/trackml/stages").glob("*.pt"))
    assert stages == ["filter", "graph"], "graph stages cached beside the data"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "test/edges_graph/efficiency_pt1",
        "test/edges_filter/purity",
        "test/edges_gnn/efficiency",
        "test/tracks_pt1/double_majority",
        "test/tracks_pt0.9/fake_rate",
        "test/tracks_pt0/duplicate_rate",
        "test/tracks_components_pt1/double_majority",
        "test/trackml_score",
        "test/seconds_per_event/gnn",
        "test/seconds_per_event/total",
    ):
        assert np.isfinite(metrics[key]), key
    # the map alone already finds most edges of high-pT particles
    assert metrics["test/edges_graph/efficiency_pt1"] > 0.9
    # each later stage does its job, at levels the 5 epochs reach and an untrained GNN does not
    # (measured, trained / untrained GNN weights (lr 0) / no GNN (every filtered edge kept)):
    # the GNN keeps the edges between hits of one particle (0.86 / 0.53 / 0.53) ...
    assert metrics["test/edges_gnn/purity_same_particle"] > 0.75
    # ... and of high-pT particles it loses few (0.97 / 0.98 / 0.98: keeping all also passes)
    assert metrics["test/edges_gnn/efficiency_pt1"] > 0.9
    # tracks: double-majority efficiency at pT > 1 GeV (0.98 / 0 / 0.67, of 43 particles) ...
    assert metrics["test/tracks_pt1/double_majority"] > 0.85
    # ... with few fakes (0.03 / no tracks / 0.28)
    assert metrics["test/tracks_pt1/fake_rate"] < 0.1
    for plot in ("efficiency", "edge_scores"):
        for suffix in (".png", ".pdf"):
            assert (run / "evaluation" / (plot + suffix)).stat().st_size > 5_000, plot + suffix


@pytest.mark.slow
def test_checkpoint_holds_every_stage(gnn_run: Path) -> None:
    ckpt = gnn_run / "logs/train/runs/gnn/checkpoints/best.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = raw["state_dict"]
    assert state["graph_builder.pairs"].shape[0] > 20
    assert torch.isfinite(state["filter_cut"])
    model, _ = model_from_checkpoint(ckpt)
    assert model.graph_builder.is_fitted and model.filter_ready
    torch.testing.assert_close(model.graph_builder.lo, state["graph_builder.lo"])


@pytest.mark.slow
def test_evaluate_and_convert_need_only_the_checkpoint(gnn_run: Path) -> None:
    ckpt = gnn_run / "logs/train/runs/gnn/checkpoints/best.ckpt"
    env = {"HEPEXP_RUN_ID": "ev", **ONE_THREAD}
    run_entrypoint("evaluate.py", f"ckpt_path={ckpt}", cwd=gnn_run, env=env)
    metrics = json.loads((gnn_run / "logs/evaluate/runs/ev/metrics.json").read_text())
    after_train = json.loads((gnn_run / "logs/train/runs/gnn/evaluation/metrics.json").read_text())
    assert metrics["trackml_score"] == pytest.approx(after_train["trackml_score"])
    assert metrics["tracks_pt0/n_particles"] == after_train["tracks_pt0/n_particles"] > 0
    assert 0 < metrics["peak_memory_gb"] < 20

    events = next((gnn_run / "data/trackml/simulated").iterdir())
    out = gnn_run / "submission.csv"
    run_entrypoint(
        "convert.py",
        f"ckpt_path={ckpt}",
        f"input={events}",
        f"output={out}",
        cwd=gnn_run,
        env={"HEPEXP_RUN_ID": "cv", **ONE_THREAD},
    )
    summary = json.loads((gnn_run / "logs/convert/runs/cv/convert.json").read_text())
    stages = ("read", "inputs", "graph", "filter", "gnn", "tracks")
    seconds = [summary[f"seconds_per_event/{k}"] for k in stages]
    assert min(seconds) >= 0 and summary["seconds_per_event/total"] == pytest.approx(sum(seconds))
    assert 0 < summary["peak_memory_gb"] < 20
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["event_id", "hit_id", "track_id"]
    assert sorted(sub.event_id.unique()) == list(range(1, 21))
    assert (sub.track_id >= 0).all()
    # every hit of every event exactly once; the test events (19, 20) score as in evaluate
    scores = []
    for event_id in (19, 20):
        hits, truth = load_event(events / f"event{event_id:09d}", ("hits", "truth"))
        mine = sub[sub.event_id == event_id]
        assert sorted(mine.hit_id) == sorted(hits.hit_id)
        submission = mine.assign(track_id=mine.track_id.where(mine.track_id > 0, -1))
        truth = truth.assign(weight=truth.weight / truth.weight.sum())
        scores.append(score_event(truth, submission[["hit_id", "track_id"]]))
    assert np.mean(scores) == pytest.approx(metrics["trackml_score"], abs=1e-9)
    assert not list(gnn_run.glob(".*.tmp")), "no temporary files left"


@pytest.mark.slow
def test_init_from_a_different_model_is_a_config_error(gnn_run: Path) -> None:
    ckpt = gnn_run / "logs/train/runs/gnn/checkpoints/best.ckpt"
    _, cfg = model_from_checkpoint(ckpt)
    cfg.model.hidden = 8
    with pytest.raises(ConfigError, match="init_from"):
        build_model(cfg.model).load_weights(ckpt)


def test_track_cut_scan_scores_as_evaluate_on_validation(gnn_run: Path) -> None:
    """benchmarks/gnn_track_cuts.py: its row for the stored cuts equals evaluate.py split=val."""
    ckpt = gnn_run / "logs/train/runs/gnn/checkpoints/best.ckpt"
    env = {"HEPEXP_RUN_ID": "val", **ONE_THREAD}
    run_entrypoint("evaluate.py", f"ckpt_path={ckpt}", "split=val", cwd=gnn_run, env=env)
    metrics = json.loads((gnn_run / "logs/evaluate/runs/val/metrics.json").read_text())
    table_path = gnn_run / "cuts.csv"
    args = ["--events", "100", "--cc-cuts", "0.8", "--walk-cuts", "0.7", "--min-hits", "4", "5"]
    proc = run_entrypoint(
        "benchmarks/gnn_track_cuts.py", str(ckpt), *args, "--csv", str(table_path),
        cwd=gnn_run, env=ONE_THREAD,
    )  # fmt: skip
    table = pd.read_csv(table_path)
    assert len(table) == 4, "walkthrough and components, min_hits 4 and 5"
    stored = table[(table.method == "walkthrough") & (table.min_hits == 4)].iloc[0]
    assert stored.dm_pt1 == pytest.approx(metrics["tracks_pt1/double_majority"])
    assert stored.fake_pt1 == pytest.approx(metrics["tracks_pt1/fake_rate"])
    assert stored.trackml_score == pytest.approx(metrics["trackml_score"])
    assert "2 validation events" in proc.stdout
    assert "recommended" in proc.stdout or "no point of the grid" in proc.stdout


@pytest.mark.slow
def test_gnn_gpu_script_plumbing_on_cpu(gnn_run: Path, tmp_path: Path) -> None:
    """benchmarks/gnn_gpu.sh (speed, fine-tuning of a CPU checkpoint on other events,
    evaluation on fresh events) completes on a CPU with tiny sizes and reports its figures; the
    fine-tuning (model.init_from) starts from every stage of the checkpoint, fits none of them
    again and trains the GNN."""
    import os
    import subprocess

    ckpt = gnn_run / "logs/train/runs/gnn/checkpoints/best.ckpt"
    out = tmp_path / "out"
    env = {
        **os.environ,
        **ONE_THREAD,
        "DEVICE": "cpu",
        "WORK_DIR": str(tmp_path / "work"),
        "BUDGET_S": "400",
        "EVAL_S": "200",
        "N_PARTICLES": "150",
        "TRAIN_EVENTS": "10",
        "TEST_EVENTS": "2",
        "SPEED": "--nodes 500 --edges 2000 --repeats 1 --hidden 16 --iterations 2 --variants fp32",
        # the sizes of the tiny checkpoint (the real recipe fine-tunes experiment=gnn_2k_cpu)
        "EXTRA": "model.graph.method=layer_pairs model.hidden=16 model.n_iterations=2 "
        "model.filter.hidden=16 trainer.max_epochs=1 data.prepare_workers=1",
        "EVAL_EXTRA": "data.prepare_workers=1",  # no process pool for two tiny events
    }
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        ["bash", str(root / "benchmarks/gnn_gpu.sh"), str(out), str(ckpt)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = {p.name: p.read_text()[-1500:] for p in (out / "logs").glob("*.log")}
    assert proc.returncode == 0, (proc.stdout[-2000:], logs)
    metrics = json.loads((out / "gnn_full_metrics.json").read_text())
    assert metrics["n_events"] == 2 and 100 < metrics["particles_per_event"] < 200
    assert 0 <= metrics["tracks_pt1/double_majority"] <= 1 and metrics["peak_memory_gb"] > 0
    speed = json.loads((out / "speed_gnn.json").read_text())
    assert list(speed["variants"]) == ["fp32"] and speed["variants"]["fp32"]["train_s"] > 0
    assert "tracks_pt1/double_majority" in proc.stdout, "the figures are printed"

    assert not list((tmp_path / "work").rglob("stages/*.pt")), "no stage fitted again"
    before = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(out / "gnn_full.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for key in ("graph_builder.pairs", "graph_builder.lo", "filter_cut", "scaler.scale"):
        torch.testing.assert_close(after[key], before[key])
    gnn_keys = [k for k in before if k.startswith("gnn.")]
    assert any(not torch.equal(after[k], before[k]) for k in gnn_keys), "the GNN trained"
