"""Lightning callbacks of hepexp that are not part of a model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from hepexp.utils.io import write_json


class StepThroughput(pl.Callback):
    """Measures training steps per second on every rank and writes one JSON file per rank.

    The first ``warmup_steps`` steps (compilation, cache warm-up) are not timed. Each rank writes
    ``<out_dir>/throughput.rank<r>.json`` with its steps, seconds, steps/s and samples/s (samples
    counted from the leading dimension of the batch's first tensor, or ``batch_size`` if given).

        python train.py '+callbacks.throughput={_target_: hepexp.callbacks.StepThroughput,
                         out_dir: ${paths.output_dir}}'
    """

    def __init__(
        self, out_dir: str | os.PathLike, warmup_steps: int = 20, batch_size: int | None = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.warmup_steps = warmup_steps
        self.batch_size = batch_size
        self._start: float | None = None
        self._steps = 0
        self._samples = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch: Any, batch_idx: int):
        if trainer.global_step == self.warmup_steps and self._start is None:
            _synchronize(pl_module.device)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        if self._start is not None:
            self._steps += 1
            self._samples += self.batch_size or _leading_size(batch)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        device = pl_module.device
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "device_index": device.index,
            "timed_steps": self._steps,
            "warmup_steps": self.warmup_steps,
            "seconds": seconds,
            "steps_per_s": self._steps / seconds if seconds > 0 else None,
            "samples_per_s": self._samples / seconds if seconds > 0 else None,
        }
        write_json(self.out_dir / f"throughput.rank{trainer.global_rank}.json", record)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _leading_size(batch: Any) -> int:
    """The leading dimension of the first tensor found in ``batch`` (0 if there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            size = _leading_size(item)
            if size:
                return size
    return 0
