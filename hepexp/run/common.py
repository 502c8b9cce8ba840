"""What the three tasks share: pairing checks, checkpoint I/O, building objects from config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from hepexp.errors import ConfigError, DataError

log = logging.getLogger("hepexp")

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CHECKPOINT_KEY = "hepexp"


def _class_attr(target: str, attr: str) -> Any:
    try:
        return getattr(get_class(target), attr)
    except Exception as err:  # an import error inside the target module, a typo in _target_
        raise ConfigError(f"cannot load '{target}': {err}") from err


def valid_pairs(conf_dir: Path = CONF_DIR) -> list[tuple[str, str]]:
    """All (model, data) config names whose model view the data source provides."""

    def target_of(path: Path) -> str | None:
        node = OmegaConf.load(path)
        if "_target_" in node:
            return node["_target_"]
        for parent in node.get("defaults", []):  # a preset inheriting from a config beside it
            if isinstance(parent, str) and (path.parent / f"{parent}.yaml").exists():
                return target_of(path.parent / f"{parent}.yaml")
        return None

    def targets(group: str) -> dict[str, str]:
        found = {p.stem: target_of(p) for p in sorted((conf_dir / group).glob("*.yaml"))}
        return {name: target for name, target in found.items() if target}

    models, sources = targets("model"), targets("data")
    pairs = []
    for model, model_target in models.items():
        view = _class_attr(model_target, "view")
        for data, data_target in sources.items():
            if view in _class_attr(data_target, "views"):
                pairs.append((model, data))
    return pairs


def check_pairing(cfg: DictConfig) -> str:
    """Fail before any work if the data source cannot serve the model's view; return the view."""
    for key in ("model", "data"):
        if key not in cfg or "_target_" not in cfg[key]:
            raise ConfigError(f"the config has no '{key}._target_'; choose {key}=<name>")
    view = _class_attr(cfg.model._target_, "view")
    views = _class_attr(cfg.data._target_, "views")
    if view not in views:
        pairs = "\n".join(f"  model={m} data={d}" for m, d in valid_pairs())
        raise ConfigError(
            f"model {cfg.model._target_} needs view '{view}', but data {cfg.data._target_} "
            f"provides only {sorted(views)}. Valid pairs:\n{pairs}"
        )
    return view


def build_datamodule(data_cfg: DictConfig, view: str):
    """The data source of ``data_cfg`` serving ``view``."""
    return instantiate(data_cfg, view=view, _convert_="all")


def build_model(model_cfg: DictConfig):
    """The model of ``model_cfg`` (plain containers; optimizer/scheduler as partials)."""
    return instantiate(model_cfg, _convert_="all")


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts/lists/scalars (safe for ``weights_only`` loading)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    container.pop("hydra", None)
    return container


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


def model_from_checkpoint(
    path: str | Path, overrides: DictConfig | None = None
) -> tuple[Any, DictConfig]:
    """Rebuild the trained model and its config from a checkpoint alone.

    ``overrides`` (e.g. ``{"model": {...}, "data": {...}}``) are merged over the stored config;
    ``None`` values in them are ignored.
    """
    checkpoint = load_checkpoint(path)
    cfg = OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"])
    if overrides is not None:
        cfg = OmegaConf.merge(cfg, _drop_nulls(overrides))
    model = build_model(cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, cfg


def _drop_nulls(cfg: DictConfig) -> DictConfig:
    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if v is not None and clean(v) != {}}
        return node

    return OmegaConf.create(clean(OmegaConf.to_container(cfg, resolve=True)))


def format_metrics(metrics: dict, title: str) -> str:
    """A readable block of ``name  value`` lines."""
    width = max((len(k) for k in metrics), default=0)
    lines = [title, "-" * len(title)]
    for key in sorted(metrics):
        value = metrics[key]
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)
