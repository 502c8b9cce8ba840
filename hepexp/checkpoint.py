"""Checkpoint files and the objects a config describes: what the run layer and the models
both use (so that models never import the run layer)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from hepexp.errors import DataError

#: the key of a Lightning checkpoint under which hepexp stores the run's config
CHECKPOINT_KEY = "hepexp"


def load_checkpoint(path: str | Path) -> dict:
    """Load a hepexp checkpoint safely (``weights_only=True``: no code runs while loading)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(path, None, f"cannot load as a weights-only checkpoint: {err}") from err
    if CHECKPOINT_KEY not in checkpoint or "config" not in checkpoint[CHECKPOINT_KEY]:
        raise DataError(path, CHECKPOINT_KEY, "not a hepexp checkpoint (no stored config)")
    return checkpoint


def build_datamodule(data_cfg: DictConfig, view: str):
    """The data source of ``data_cfg`` serving ``view``."""
    return instantiate(data_cfg, view=view, _convert_="all")


def build_model(model_cfg: DictConfig):
    """The model of ``model_cfg`` (plain containers; optimizer/scheduler as partials)."""
    return instantiate(model_cfg, _convert_="all")
