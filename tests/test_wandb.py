"""W&B carries everything: the checkpoint knows its W&B run; the evaluation at the end of
training and evaluate.py log metrics, plots and metrics.json to that run (or to a new run
linked to it); checkpoints as artifacts. Checked offline, by reading the runs' logs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hepexp.checkpoint import load_checkpoint
from hepexp.errors import ConfigError
from hepexp.run.wandb_logging import log_evaluation_to_wandb
from hepexp.utils.io import write_json

from .conftest import TINY_DATA, run_entrypoint
from .wandb_helpers import wandb_run

JETS = ["model=jet_ae", "data=atlas_jets", *TINY_DATA["atlas_jets"], "data.batch_size=256"]
OFFLINE = {"WANDB_MODE": "offline"}
PLOTS = {"distributions", "residuals", "residuals_vs_pt"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny jet_ae run logged to an offline W&B run, with checkpoint artifacts."""
    cwd = tmp_path_factory.mktemp("wandb_run")
    run_entrypoint(
        "train.py",
        *JETS,
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "logger=wandb",
        "logger.wandb.log_model=true",
        cwd=cwd,
        env={**OFFLINE, "HEPEXP_RUN_ID": "train"},
    )
    return cwd


def _offline_run(directory: Path) -> Path:
    runs = list((directory / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"one offline W&B run in {directory}"
    return runs[0]


def _images(info: dict) -> set[str]:
    return {
        key
        for row in info["history"]
        for key, value in row.items()
        if isinstance(value, dict) and value.get("_type") == "image-file"
    }


def _media(run_dir: Path, prefix: str) -> set[str]:
    """Plot names of the images under the offline run's ``files/media/images/<prefix>plots``."""
    files = (run_dir / "files/media/images" / prefix / "plots").glob("*.png")
    return {f.name.rsplit("_", 2)[0] for f in files}


def _evaluation_input(tmp_path: Path, metrics: dict) -> Path:
    out = tmp_path / "evaluation"
    out.mkdir()
    write_json(out / "metrics.json", metrics)
    return out


@pytest.mark.slow
def test_training_run_holds_the_test_evaluation_and_the_checkpoints(trained: Path) -> None:
    run = trained / "logs/train/runs/train"
    offline = _offline_run(run)
    info = wandb_run(offline)
    stored = load_checkpoint(run / "checkpoints/best.ckpt")["hepexp"]["wandb"]
    assert stored["id"] == info["id"] and offline.name.endswith(f"-{info['id']}")
    assert (stored["project"], stored["mode"], Path(stored["dir"])) == ("hepexp", "offline", run)

    evaluation = json.loads((run / "evaluation/metrics.json").read_text())
    assert info["summary"]["test/pt_rel_rms"] == pytest.approx(evaluation["pt_rel_rms"])
    assert info["summary"]["test/n_jets"] == evaluation["n_jets"] == 600
    assert _images(info) == {f"test/plots/{name}" for name in PLOTS}
    assert _media(offline, "test/") == PLOTS
    assert "test/metrics.json" in info["files"]
    assert json.loads((offline / "files/test/metrics.json").read_text()) == evaluation
    assert ("model", f"model-{info['id']}") in info["artifacts"], "log_model works offline"


@pytest.mark.slow
def test_evaluate_logs_to_the_training_run_resumed_by_id(trained: Path) -> None:
    ckpt = trained / "logs/train/runs/train/checkpoints/best.ckpt"
    training_id = load_checkpoint(ckpt)["hepexp"]["wandb"]["id"]
    run_entrypoint(
        "evaluate.py", f"ckpt_path={ckpt}", cwd=trained, env={**OFFLINE, "HEPEXP_RUN_ID": "ev"}
    )
    out = trained / "logs/evaluate/runs/ev"
    offline = _offline_run(out)
    assert offline.name.endswith(f"-{training_id}"), "the same run, for `wandb sync` to merge"
    info = wandb_run(offline)
    assert info["id"] == training_id

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pt_rel_rms", "eta_abs_rms", "n_jets", "checkpoint", "split"):
        assert info["summary"][f"evaluate/test/{key}"] == pytest.approx(metrics[key]), key
    tables = [
        row["evaluate/test/metrics"] for row in info["history"] if "evaluate/test/metrics" in row
    ]
    assert tables and tables[0]["_type"] == "table-file"
    assert tables[0]["nrows"] == sum(isinstance(v, (int, float)) for v in metrics.values())
    assert _images(info) == {f"evaluate/test/plots/{name}" for name in PLOTS}
    for image in (offline / "files/media/images/evaluate/test/plots").glob("*.png"):
        plot = out / f"{image.name.rsplit('_', 2)[0]}.png"
        assert image.read_bytes() == plot.read_bytes(), "the plot itself"
    assert json.loads((offline / "files/evaluate/test/metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_evaluation_to_a_new_linked_run(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    ckpt = trained / "logs/train/runs/train/checkpoints/best.ckpt"
    training = load_checkpoint(ckpt)["hepexp"]["wandb"]
    metrics = {"pt_rel_rms": 0.25, "n_jets": 10, "split": "val"}
    out = _evaluation_input(tmp_path, metrics)
    cfg = OmegaConf.create({"ckpt_path": str(ckpt), "split": "val", "wandb": {"mode": "new"}})
    log_evaluation_to_wandb(cfg, metrics, out)
    info = wandb_run(_offline_run(out))
    assert info["id"] != training["id"]
    assert info["job_type"] == "evaluation" and info["name"] == f"{training['name']}-evaluation"
    assert info["config"]["training_run_id"] == training["id"]
    assert info["summary"]["evaluate/val/pt_rel_rms"] == 0.25


def test_no_wandb_run_when_off_or_trained_without_wandb_or_wandb_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    caplog.set_level(logging.INFO, logger="hepexp")
    plain = tmp_path / "plain.ckpt"
    torch.save({"hepexp": {"config": {}}, "state_dict": {}}, plain)
    with_run = tmp_path / "with_run.ckpt"
    wandb_info = {"id": "abc", "project": "hepexp", "entity": None, "name": "x", "group": None}
    torch.save({"hepexp": {"config": {}, "wandb": wandb_info}, "state_dict": {}}, with_run)
    metrics = {"pt_rel_rms": 0.25}
    out = _evaluation_input(tmp_path, metrics)

    def evaluate_with(ckpt: Path, mode: str) -> None:
        cfg = OmegaConf.create({"ckpt_path": str(ckpt), "split": "test", "wandb": {"mode": mode}})
        log_evaluation_to_wandb(cfg, metrics, out)

    evaluate_with(with_run, "off")
    evaluate_with(plain, "resume")
    assert "trained without W&B" in caplog.text
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: `import wandb` fails
    evaluate_with(with_run, "resume")
    assert "wandb is not installed" in caplog.text
    assert not (out / "wandb").exists()
    with pytest.raises(ConfigError, match="wandb.mode"):
        evaluate_with(with_run, "sometimes")
