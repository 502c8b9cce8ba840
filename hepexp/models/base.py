"""Base class of all models: declares its view and the evaluate/convert hooks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytorch_lightning as pl
import torch

if TYPE_CHECKING:
    from hepexp.data.base import HEPDataModule


class HEPModule(pl.LightningModule):
    """A model of hepexp.

    Subclasses set ``view`` (what they consume; see the data sources' ``views``) and implement
    the Lightning steps, ``evaluate`` (physics metrics + plots) and ``convert``.

    ``optimizer`` and ``scheduler`` are partials from the config (``_partial_: true``): the
    optimizer is called with the parameters, the scheduler with the optimizer (and, for
    schedulers that take ``total_steps``, the trainer's number of optimiser steps).
    """

    view: ClassVar[str] = ""

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor

    @property
    def datamodule(self) -> HEPDataModule:
        return self.trainer.datamodule

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        given = getattr(self.scheduler_factory, "keywords", {})
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in given:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.scheduler_monitor,
            },
        }

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
