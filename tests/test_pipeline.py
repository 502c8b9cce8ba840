"""The entry points as users run them: train -> evaluate -> convert, resume, loggers, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.checkpoint import build_datamodule, load_checkpoint
from hepexp.run.common import model_from_checkpoint, valid_pairs
from hepexp.run.train import train

from .conftest import ONE_THREAD, TINY_DATA, compose_config, run_dirs, run_entrypoint

#: the default pair is regressor_flash on trackml; these tests run jet_ae on atlas_jets
JETS = ["model=jet_ae", "data=atlas_jets", *TINY_DATA["atlas_jets"]]
#: 10 short epochs (470 steps of 64 jets): a few seconds, and residuals an untrained model
#: does not reach
EPOCHS = 10
QUICK = [
    f"trainer.max_epochs={EPOCHS}",
    "trainer.accelerator=cpu",
    "data.batch_size=64",
    "model.optimizer.lr=3e-3",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny jet_ae run shared by the tests below."""
    cwd = tmp_path_factory.mktemp("jets_run")
    env = {"HEPEXP_RUN_ID": "first", **ONE_THREAD}
    run_entrypoint("train.py", *QUICK, *JETS, cwd=cwd, env=env)
    return cwd


def test_train_writes_only_under_the_run_dir(trained_run: Path) -> None:
    run = trained_run / "logs" / "train" / "runs" / "first"
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "metrics.json",
        "csv/metrics.csv",
        "evaluation/metrics.json",
        "evaluation/residuals.png",
        "evaluation/residuals.pdf",
    ):
        assert (run / name).exists(), name
    outside = {p.name for p in trained_run.iterdir()}
    assert outside == {"logs", "data"}, "nothing written outside the run dir and the data cache"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best/val/loss"] == pytest.approx(
        min(pd.read_csv(run / "csv/metrics.csv")["val/loss"].dropna())
    )
    # trained for real: sigma68 of the residuals well below those of the untrained model
    # (measured with model=jet_ae's recipe, seeds 42, 1, 2 / untrained (lr 0); the recipe keeps
    # pT, eta and phi and predicts the mass from them, docs/benchmarks.md)
    assert metrics["test/pt_rel_sigma68"] < 0.05  # 0.004-0.014 / 0.27
    assert metrics["test/E_rel_sigma68"] < 0.06  # 0.008-0.023 / 0.52
    # angles: the untrained model leaves about the spread of a uniform angle (0.68 pi = 2.1 rad)
    assert metrics["test/eta_abs_sigma68"] < 0.08  # 0.007-0.027 / 2.19
    assert metrics["test/phi_abs_sigma68"] < 0.06  # 0.007-0.014 / 2.11
    # the mass of jets above 1 GeV: predicted from pT (the spread of m/pT at given pT) and
    # centred on the true value; the untrained model's is narrower but sits at -110%
    assert metrics["test/m_rel_sigma68_m_gt_1GeV"] < 0.45  # 0.26-0.34 / 0.05
    assert abs(metrics["test/m_rel_mean_m_gt_1GeV"]) < 0.15  # 0.01-0.03 / -1.11


def test_checkpoint_is_self_contained_and_safe(trained_run: Path) -> None:
    ckpt = trained_run / "logs/train/runs/first/checkpoints/best.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # no pickle execution needed
    assert raw["hepexp"]["config"]["model"]["_target_"] == "hepexp.models.jet_ae.JetAutoencoder"
    assert "hyper_parameters" not in raw or all(
        isinstance(v, (int, float, str, list, dict, type(None)))
        for v in raw["hyper_parameters"].values()
    )
    model, cfg = model_from_checkpoint(ckpt)
    assert cfg.data.simulation.n_train == 3000
    assert model.transform.is_fitted


def test_evaluate_needs_only_the_checkpoint(trained_run: Path) -> None:
    ckpt = trained_run / "logs/train/runs/first/checkpoints/best.ckpt"
    env = {"HEPEXP_RUN_ID": "ev", **ONE_THREAD}
    run_entrypoint("evaluate.py", f"ckpt_path={ckpt}", cwd=trained_run, env=env)
    out = trained_run / "logs/evaluate/runs/ev"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "pt_rel_mean",
        "pt_rel_rms",
        "m_rel_rms",
        "E_rel_rms",
        "eta_abs_rms",
        "phi_abs_rms",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["n_jets"] == 600
    for plot in ("distributions", "residuals", "residuals_vs_pt"):
        for suffix in (".png", ".pdf"):
            assert (out / (plot + suffix)).stat().st_size > 10_000, plot + suffix
    # the same numbers as the evaluation at the end of training: exactly what was trained
    after_train = json.loads(
        (trained_run / "logs/train/runs/first/evaluation/metrics.json").read_text()
    )
    assert metrics["pt_rel_rms"] == pytest.approx(after_train["pt_rel_rms"], rel=1e-6)


def test_convert_encode_then_decode(trained_run: Path) -> None:
    ckpt = trained_run / "logs/train/runs/first/checkpoints/best.ckpt"
    test_table = trained_run / "data/atlas_jets/simulated/test.parquet"
    latents = trained_run / "latents.parquet"
    decoded = trained_run / "decoded.parquet"
    run_entrypoint(
        "convert.py",
        f"ckpt_path={ckpt}",
        f"input={test_table}",
        f"output={latents}",
        cwd=trained_run,
        env=ONE_THREAD,
    )
    table = pd.read_parquet(latents)
    assert list(table.columns) == ["m", "pt", "phi", "eta", "latent_0", "latent_1", "latent_2"]
    original = pd.read_parquet(test_table)
    np.testing.assert_allclose(table.pt, original.pt)  # original columns kept, in file units (MeV)
    run_entrypoint(
        "convert.py",
        f"ckpt_path={ckpt}",
        f"input={latents}",
        f"output={decoded}",
        "mode=decode",
        cwd=trained_run,
        env=ONE_THREAD,
    )
    jets = pd.read_parquet(decoded)
    rel = (jets.pt - original.pt) / original.pt
    # measured: 0.07-0.09 trained (4 seeds), 0.20 untrained
    assert np.median(np.abs(rel)) < 0.13, "decoded jets are in MeV and close to the inputs"
    assert not list(trained_run.glob("*.tmp")), "no temp files left"


def test_resume_from_last_checkpoint_continues(trained_run: Path) -> None:
    last = trained_run / "logs/train/runs/first/checkpoints/last.ckpt"
    before = load_checkpoint(last)
    run_entrypoint(
        "train.py",
        *QUICK,
        *JETS,
        f"trainer.max_epochs={before['epoch'] + 2}",
        f"ckpt_path={last}",
        "evaluate_after=false",
        cwd=trained_run,
        env={"HEPEXP_RUN_ID": "resumed", **ONE_THREAD},
    )
    # read from the log: the resumed run writes last.ckpt only if val/loss improves (below)
    log = pd.read_csv(trained_run / "logs/train/runs/resumed/csv/metrics.csv")
    assert log.dropna(subset=["val/loss"])["epoch"].tolist() == [before["epoch"] + 1]
    assert log["step"].min() >= before["global_step"], "one more epoch, not a restart"


def test_last_checkpoint_holds_the_final_epoch(trained_run: Path) -> None:
    """last.ckpt is the final epoch (to resume from), whichever epoch was best."""
    last = trained_run / "logs/train/runs/first/checkpoints/last.ckpt"
    assert load_checkpoint(last)["epoch"] == EPOCHS - 1


def test_wandb_logger_offline_without_account(tmp_path: Path) -> None:
    no_account = {
        "HOME": str(tmp_path),
        "WANDB_API_KEY": None,
        "NETRC": str(tmp_path / "none"),
        "WANDB_MODE": None,
    }
    proc = run_entrypoint(
        "train.py",
        "logger=wandb",
        "trainer.max_epochs=1",
        "evaluate_after=false",
        *JETS,
        cwd=tmp_path,
        env=no_account,
    )
    assert "wandb sync" in proc.stderr + proc.stdout
    run = run_dirs(tmp_path)[0]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "an offline W&B run was written for later `wandb sync`"
    assert list(offline[0].glob("*.wandb"))
    assert (run / "csv/metrics.csv").exists()


@pytest.mark.parametrize(("model", "data"), valid_pairs())
def test_fast_dev_run_every_pair(tmp_path: Path, model: str, data: str) -> None:
    """One training and one validation batch of every pair, in this process (a train.py process
    start costs ~6 s of imports; the tests above run the entry points as users do)."""
    # batches of 4 OMs: the reference om2vec attends over 1,024 positions per OM
    small = ["data.batch_size=4"] if data == "prometheus" else []
    overrides = [f"model={model}", f"data={data}", "debug=fdr", *TINY_DATA[data], *small]
    cfg = compose_config(tmp_path, overrides)
    train(cfg)
    assert (tmp_path / "out" / "config.yaml").exists()


@pytest.mark.slow
def test_ddp_sim_trains_two_processes(tmp_path: Path) -> None:
    run_entrypoint(
        "train.py",
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        *JETS,
        "data.batch_size=100",
        "evaluate_after=false",
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "ddp"},
    )
    run = tmp_path / "logs/train/runs/ddp"
    assert [p.name for p in run_dirs(tmp_path)] == ["ddp"], "both ranks share one run dir"
    ckpt = load_checkpoint(run / "checkpoints/last.ckpt")
    # 3000 jets / 2 ranks / 100 per batch = 15 steps per epoch on each rank
    assert ckpt["global_step"] == 30
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/loss"] < 0.05  # measured: 0.014 trained, 0.19 untrained (lr 0)
    # the logged val/loss is synced over ranks: each rank saw half of the validation jets, and
    # the metric equals the loss of the final weights on all 600 of them in one process
    model, cfg = model_from_checkpoint(run / "checkpoints/last.ckpt")
    datamodule = build_datamodule(cfg.data, model.view)
    datamodule.setup("fit")
    with torch.no_grad():
        full = model._loss(datamodule.dataset("val").values.float()).item()
    assert len(datamodule.dataset("val")) == 600
    assert metrics["val/loss"] == pytest.approx(full, rel=1e-5)
    assert metrics["best/val/loss"] <= metrics["val/loss"]


@pytest.mark.slow
def test_ddp_inside_multirun_does_not_start_a_sweep_per_rank(tmp_path: Path) -> None:
    proc = run_entrypoint(
        "train.py",
        "-m",
        "trainer=ddp_sim",
        "trainer.max_epochs=1",
        "seed=1,2",
        *JETS,
        "evaluate_after=false",
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "sweep"},
    )
    assert "using ddp_spawn instead" in proc.stdout + proc.stderr
    jobs = sorted((tmp_path / "logs/train/multiruns/sweep").iterdir())
    assert [j.name for j in jobs if j.is_dir() and j.name.isdigit()] == ["0", "1"]
    for job in ("0", "1"):
        ckpt = load_checkpoint(tmp_path / f"logs/train/multiruns/sweep/{job}/checkpoints/last.ckpt")
        assert ckpt["hepexp"]["config"]["seed"] == int(job) + 1
    sweeps = [p.name for p in (tmp_path / "logs/train/multiruns").iterdir()]
    assert sweeps == ["sweep"], "no rank started a sweep of its own"
