"""Base class of all models: declares its view and the evaluate/convert hooks."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Timer

from hepexp.errors import ConfigError

if TYPE_CHECKING:
    from hepexp.data.base import HEPDataModule

log = logging.getLogger(__name__)


class HEPModule(pl.LightningModule):
    """A model of hepexp.

    Subclasses set ``view`` (what they consume; see the data sources' ``views``) and implement
    the Lightning steps, ``evaluate`` (physics metrics + plots), ``convert`` (files in, files
    out) and ``predict`` (the same in memory: plain data in, plain data out, no Trainer).

    ``optimizer`` and ``scheduler`` are partials from the config (``_partial_: true``): the
    optimizer is called with the parameters, the scheduler with the optimizer (and, for
    schedulers that take ``total_steps``, the trainer's number of optimiser steps; for those
    that take ``time_fraction``, the share of ``trainer.max_time`` used so far).
    ``init_from``: a checkpoint of the same model whose weights start training (fine-tuning);
    subclasses overriding ``setup`` call ``super().setup(stage)`` first.
    """

    view: ClassVar[str] = ""
    #: the resolved run config (model, data, trainer, ...) of a model loaded by
    #: :func:`hepexp.load_model`; None for a model built directly
    run_config: DictConfig | None = None

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.init_from = init_from
        self._init_loaded = False
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor

    @property
    def datamodule(self) -> HEPDataModule:
        return self.trainer.datamodule

    def load_weights(self, path: str | Path) -> None:
        """Load every weight and buffer from a checkpoint of this model (weights only)."""
        from hepexp.checkpoint import load_checkpoint

        try:
            self.load_state_dict(load_checkpoint(path)["state_dict"])
        except RuntimeError as err:
            raise ConfigError(
                f"model.init_from: {path} does not fit this model (other sizes or options?): {err}"
            ) from err
        log.info("weights of %s loaded from %s", type(self).__name__, path)

    def setup(self, stage: str) -> None:
        # runs before Lightning restores a resumed checkpoint (ckpt_path), which then wins
        if stage == "fit" and self.init_from and not self._init_loaded:
            self.load_weights(self.init_from)
            self._init_loaded = True

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        accepted = set(inspect.signature(func).parameters) - set(
            getattr(self.scheduler_factory, "keywords", {})
        )
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        timed = "time_fraction" in accepted and timer is not None
        kwargs: dict[str, Any] = {}
        if timed:
            kwargs["time_fraction"] = partial(_time_fraction, self.trainer, timer)
        if "total_steps" in accepted:
            steps = self.trainer.estimated_stepping_batches
            if math.isinf(steps) and not timed:
                raise ConfigError(
                    "the learning-rate schedule needs a length: set trainer.max_epochs or "
                    "trainer.max_steps (or trainer.max_time with a timed schedule)"
                )
            # with no step limit the time budget alone drives the cycle
            kwargs["total_steps"] = 10**7 if math.isinf(steps) else int(steps)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.scheduler_monitor,
            },
        }

    def data_source(self) -> HEPDataModule:
        """The data module this model was trained with, for its settings (selection, units,
        ...; nothing is read): the trainer's when attached, else one built from
        ``run_config.data``."""
        if self._trainer is not None and self._trainer.datamodule is not None:
            return self._trainer.datamodule
        if self.run_config is None:
            raise ConfigError(
                f"{type(self).__name__} needs the settings of its training data: load it with "
                "hepexp.load_model(ckpt_path), or pass datamodule="
            )
        from hepexp.checkpoint import build_datamodule

        return build_datamodule(self.run_config.data, self.view)

    def predict(self, *data: Any, **options: Any) -> Any:
        """This model applied to plain data (DataFrames, arrays) without a Trainer: what
        ``convert`` does to files, with the transforms of training (see each model)."""
        raise NotImplementedError(f"{type(self).__name__} has no predict")

    def evaluate(self, trainer: pl.Trainer, datamodule: HEPDataModule, out_dir: Path) -> dict:
        """Physics metrics of this model on ``datamodule``'s evaluation split; writes plots."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation")

    def convert(
        self,
        datamodule: HEPDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        **options: Any,
    ) -> dict:
        """Convert ``input_path`` into ``output_path`` (latents, tokens, tracks...)."""
        raise NotImplementedError(f"{type(self).__name__} has no conversion")


def _time_fraction(trainer: pl.Trainer, timer: Timer) -> float:
    """Share of the trainer's time budget (``max_time``) used so far, 0..1; rank 0's value on
    every rank, so that distributed ranks keep the same learning rate."""
    elapsed = timer.time_elapsed()
    remaining = timer.time_remaining() or 0.0
    total = elapsed + max(remaining, 0.0)
    fraction = min(elapsed / total, 1.0) if total > 0 else 1.0
    return float(trainer.strategy.broadcast(fraction))
