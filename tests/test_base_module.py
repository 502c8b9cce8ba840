"""HEPModule features shared by all models: the timed one-cycle schedule (identical to OneCycleLR
by steps, annealed by a time budget), fine-tuning from a checkpoint, evaluation device."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader, TensorDataset

from hepexp.checkpoint import CHECKPOINT_KEY
from hepexp.errors import ConfigError
from hepexp.models.base import HEPModule
from hepexp.models.schedules import TimedOneCycleLR
from hepexp.run.evaluate import evaluation_trainer


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_without_time_budget_equals_one_cycle() -> None:
    a, b = _optimizer(), _optimizer()
    plain = OneCycleLR(a, max_lr=1.0, total_steps=50, pct_start=0.2)
    timed = TimedOneCycleLR(b, max_lr=1.0, total_steps=50, pct_start=0.2)
    assert _lrs(timed, b, 49) == _lrs(plain, a, 49)


def test_time_drives_progress_and_state_survives_a_reload() -> None:
    clock = {"fraction": 0.0}
    optimizer = _optimizer()
    scheduler = TimedOneCycleLR(
        optimizer,
        max_lr=1.0,
        total_steps=1000,
        pct_start=0.2,
        time_fraction=lambda: clock["fraction"],
    )
    early = _lrs(scheduler, optimizer, 5)[-1]
    assert early < 0.1  # still warming up: 5 of 1000 steps
    clock["fraction"] = 0.2  # the peak, by time
    assert abs(_lrs(scheduler, optimizer, 1)[-1] - 1.0) < 1e-3
    clock["fraction"] = 1.0  # budget used: fully annealed although few steps were taken
    final = _lrs(scheduler, optimizer, 3)[-1]
    assert final < 1e-5
    state = scheduler.state_dict()
    assert "time_fraction" not in state
    torch.save(state, "/dev/null")  # plain data: no callable inside
    again = TimedOneCycleLR(_optimizer(), max_lr=1.0, total_steps=1000, time_fraction=lambda: 0.0)
    again.load_state_dict(state)
    assert again.last_epoch == scheduler.last_epoch and again.time_fraction() == 0.0


class _Tiny(HEPModule):
    def __init__(self, width: int = 4, init_from: str | None = None) -> None:
        super().__init__(
            optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
            scheduler=partial(TimedOneCycleLR, max_lr=1e-2),  # as Hydra builds _partial_
            scheduler_interval="step",
            init_from=init_from,
        )
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)


def test_trainer_max_time_anneals_the_cycle(tmp_path) -> None:
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    model = _Tiny()
    trainer = pl.Trainer(
        max_epochs=-1,
        max_time={"seconds": 3},
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    assert trainer.global_step > 20
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    # OneCycleLR ends at max_lr / (div_factor * final_div_factor) = 1e-2 / 2.5e5
    assert lr < 1e-2 / 1e4, lr


def test_init_from_loads_weights_when_fitting_and_rejects_another_model(tmp_path) -> None:
    trained = _Tiny()
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": trained.state_dict(), CHECKPOINT_KEY: {"config": {}}}, ckpt)
    fresh = _Tiny(init_from=str(ckpt))
    fresh.setup("validate")
    assert not torch.equal(fresh.layer.weight, trained.layer.weight)
    fresh.setup("fit")
    assert torch.equal(fresh.layer.weight, trained.layer.weight)
    with torch.no_grad():
        fresh.layer.weight.add_(1.0)
    fresh.setup("fit")  # loaded once: a second setup keeps the weights trained since
    assert not torch.equal(fresh.layer.weight, trained.layer.weight)
    with pytest.raises(ConfigError, match="init_from"):
        _Tiny(width=5, init_from=str(ckpt)).setup("fit")


def test_a_gpu_trained_model_is_evaluated_on_the_cpu_without_a_gpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = {"accelerator": "gpu", "precision": "bf16-mixed"}
    trainer = evaluation_trainer(cfg, tmp_path)
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"
    assert trainer.precision == "32-true"
