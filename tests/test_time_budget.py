"""The job's wall-clock budget (``time_budget``) and reproducibility from the seed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from hepexp.checkpoint import build_datamodule
from hepexp.errors import ConfigError
from hepexp.run.common import check_pairing
from hepexp.run.train import duration_string, fit_into_budget, seconds_of

from .conftest import TINY_DATA, compose_config, run_entrypoint


def test_seconds_of_durations() -> None:
    assert seconds_of("00:00:10:00") == 600
    assert seconds_of("01:30") == 90
    assert seconds_of("1:02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert seconds_of(42) == 42.0
    assert duration_string(86400 + 3 * 3600 + 62.7) == "01:03:01:02"
    with pytest.raises(ConfigError, match="DD:HH:MM:SS"):
        seconds_of("ten minutes")


def _jet_config(tmp_path: Path, *overrides: str):
    cfg = compose_config(
        tmp_path, ["model=jet_ae", "data=atlas_jets", *TINY_DATA["atlas_jets"], *overrides]
    )
    return cfg, build_datamodule(cfg.data, check_pairing(cfg))


def test_training_gets_the_budget_left_after_data_preparation(tmp_path: Path) -> None:
    cfg, datamodule = _jet_config(tmp_path, "time_budget=00:00:05:00", "time_reserve=30")
    fit_into_budget(cfg, datamodule, start=time.monotonic() - 20.0)
    seconds = seconds_of(cfg.trainer.max_time)
    assert 300 - 30 - 20 - 15 <= seconds <= 300 - 30 - 20  # preparation took < 15 s
    assert (tmp_path / "data" / "atlas_jets").exists(), "the data were prepared inside the budget"
    # an explicit, shorter trainer.max_time wins
    cfg, datamodule = _jet_config(
        tmp_path, "time_budget=00:00:05:00", "trainer.max_time=00:00:00:40"
    )
    fit_into_budget(cfg, datamodule, start=time.monotonic())
    assert cfg.trainer.max_time == "00:00:00:40"


def test_a_budget_too_small_for_training_is_an_error(tmp_path: Path) -> None:
    cfg, datamodule = _jet_config(tmp_path, "time_budget=60", "time_reserve=60")
    with pytest.raises(ConfigError, match="nothing is left for training"):
        fit_into_budget(cfg, datamodule, start=time.monotonic())


@pytest.mark.slow
def test_deterministic_runs_repeat_exactly(tmp_path: Path) -> None:
    """The main job's model, asked for determinism with a step count, trains to the same
    weights twice."""
    states = []
    for run, seed in (("a", 42), ("b", 42), ("c", 7)):
        run_entrypoint(
            "train.py",
            *TINY_DATA["trackml"],
            f"seed={seed}",
            "trainer.deterministic=true",
            "trainer.max_steps=6",
            "trainer.max_epochs=100",
            "trainer.accelerator=cpu",
            "model.scan.enabled=false",
            "evaluate_after=false",
            cwd=tmp_path,
            env={"HEPEXP_RUN_ID": run},
        )
        ckpt = tmp_path / "logs/train/runs" / run / "checkpoints/last.ckpt"
        states.append(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert any(not torch.equal(v, states[2][k]) for k, v in states[0].items()), "seed matters"
