"""A trained model from its checkpoint alone, ready for ``model.predict`` in a notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf

from hepexp.run.common import model_from_checkpoint

if TYPE_CHECKING:
    from hepexp.models.base import HEPModule


def load_model(
    ckpt_path: str | Path,
    device: str | torch.device = "cpu",
    overrides: Mapping | Sequence[str] | None = None,
) -> HEPModule:
    """The trained model of a hepexp checkpoint, in eval mode on ``device`` (default: CPU).

    The checkpoint is read with ``torch.load(..., weights_only=True)``: no code runs while
    loading. The model is rebuilt from the config stored in the checkpoint, which is attached
    as ``model.run_config`` (an OmegaConf ``DictConfig`` of the whole training run:
    ``run_config.model``, ``run_config.data``, ...). ``model.predict(...)`` then applies it to
    plain data with the transforms of training.

    ``overrides`` are merged over the stored config before the model is built, as a nested
    mapping (``{"model": {"clustering": {"n_jobs": 1}}}``) or dotted ``key=value`` strings
    (``["model.clustering.n_jobs=1"]``), as on evaluate.py's command line: a null clears a
    value, a dotted key must exist in the stored config.
    """
    must_exist: set[str] = set()
    if overrides is None:
        extra = None
    elif isinstance(overrides, Mapping):
        extra = OmegaConf.create(dict(overrides))
    else:
        dotlist = [overrides] if isinstance(overrides, str) else list(overrides)
        extra = OmegaConf.from_dotlist(dotlist)
        must_exist = {item.split("=", 1)[0] for item in dotlist}
    model, config = model_from_checkpoint(ckpt_path, extra, must_exist)
    model.run_config = config
    return model.to(device).eval()
