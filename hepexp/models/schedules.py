"""Learning-rate schedules beyond torch's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import OneCycleLR


class TimedOneCycleLR(OneCycleLR):
    """One-cycle schedule that also completes within a wall-time budget.

    Progress through the cycle is the larger of ``steps / total_steps`` and
    ``time_fraction()`` (the share of the time budget used, 0..1), so a run stopped by
    ``trainer.max_time`` still ends annealed. Without ``time_fraction`` this is
    :class:`torch.optim.lr_scheduler.OneCycleLR`. :class:`~hepexp.models.base.HEPModule` passes
    the trainer's timer when ``trainer.max_time`` is set.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_lr: float,
        total_steps: int,
        time_fraction: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        self.time_fraction = time_fraction
        super().__init__(optimizer, max_lr, total_steps=total_steps, **options)

    def get_lr(self) -> list[float]:
        if self.time_fraction is not None:
            by_time = int(self.time_fraction() * self.total_steps)
            self.last_epoch = min(max(self.last_epoch, by_time), self.total_steps)
        return super().get_lr()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("time_fraction", None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        time_fraction = self.time_fraction
        super().load_state_dict(state_dict)
        self.time_fraction = time_fraction
