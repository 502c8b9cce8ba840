"""What the three tasks share: pairing checks, overrides of stored configs, models from
checkpoints (checkpoint I/O and building objects live in :mod:`hepexp.checkpoint`)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from hepexp.checkpoint import CHECKPOINT_KEY, build_model, load_checkpoint
from hepexp.errors import ConfigError

log = logging.getLogger(__name__)

#: the config tree, shipped inside the package (Hydra finds it as ``pkg://hepexp.conf``)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts/lists/scalars (safe for ``weights_only`` loading)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    container.pop("hydra", None)
    return container


#: the groups of a checkpoint's config that evaluate.py and convert.py take overrides of
CHECKPOINT_GROUPS = ("data", "model")


def plain_overrides(args: Sequence[str]) -> list[str]:
    """Command-line arguments of evaluate.py / convert.py with ``data.<key>=value`` and
    ``model.<key>=value`` turned into Hydra force-adds (``++``), so that any key of the
    checkpoint's config can be overridden without ``+`` (``null`` clears a value)."""
    out = []
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" in arg and "." in key and key.split(".", 1)[0] in CHECKPOINT_GROUPS:
            arg = "++" + arg
        out.append(arg)
    return out


def checkpoint_overrides(cfg: DictConfig) -> tuple[DictConfig, set[str]]:
    """The ``data``/``model`` values of an evaluate/convert config (nulls included) and the keys
    given plainly (``data.x=1``, which must exist in the checkpoint's config, unlike ``+data.x=1``)."""
    values = OmegaConf.create({k: cfg.get(k) or {} for k in CHECKPOINT_GROUPS})
    plain: set[str] = set()
    if HydraConfig.initialized():
        for arg in HydraConfig.get().overrides.task:
            key = arg.split("=", 1)[0]
            if key.startswith("+") and not key.startswith("++"):
                continue  # a deliberate addition
            key = key.lstrip("+")
            if key.split(".", 1)[0] in CHECKPOINT_GROUPS and "." in key:
                plain.add(key)
    return values, plain


def merge_overrides(
    stored: DictConfig, overrides: DictConfig | None, must_exist: set[str] | frozenset = frozenset()
) -> DictConfig:
    """``stored`` (a checkpoint's config) with ``overrides`` merged over it.

    Keys in ``must_exist`` (dotted) must be keys of ``stored``: an unknown one is an error that
    lists the close ones. A new ``data.source`` means the new files and nothing of the training
    files: the data source's ``file_keys`` (e.g. a jet table's ``train_path``) are cleared
    unless they are overridden too."""
    if overrides is None:
        return stored
    missing = object()
    for key in sorted(must_exist):
        if OmegaConf.select(stored, key, default=missing) is missing:
            group = key.split(".", 1)[0]
            candidates = list(_dotted_keys(stored.get(group) or {}, group))
            close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.6)
            hint = f"; close ones: {', '.join(close)}" if close else ""
            raise ConfigError(
                f"'{key}' is not a key of the checkpoint's config{hint} "
                f"(add a new key deliberately with +{key}=...)"
            )
    merged = OmegaConf.merge(stored, overrides)
    data_overrides = overrides.get("data") or {}
    if "source" in data_overrides and "_target_" in merged.get("data", {}):
        for key in _class_attr(merged.data._target_, "file_keys"):
            if key in merged.data and key not in data_overrides:
                merged.data[key] = None
    return merged


def _dotted_keys(node: Any, prefix: str):
    for key, value in node.items():
        yield f"{prefix}.{key}"
        if isinstance(value, DictConfig | dict):
            yield from _dotted_keys(value, f"{prefix}.{key}")


def model_from_checkpoint(
    path: str | Path,
    overrides: DictConfig | None = None,
    must_exist: set[str] | frozenset = frozenset(),
) -> tuple[Any, DictConfig]:
    """Rebuild the trained model and its config from a checkpoint alone.

    ``overrides`` (e.g. ``{"model": {...}, "data": {...}}``) are merged over the stored config
    (a null clears a value; see :func:`merge_overrides` for ``must_exist`` and ``data.source``).
    """
    checkpoint = load_checkpoint(path)
    cfg = merge_overrides(
        OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"]), overrides, must_exist
    )
    model = build_model(cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, cfg


def format_metrics(metrics: dict, title: str) -> str:
    """A readable block of ``name  value`` lines."""
    width = max((len(k) for k in metrics), default=0)
    lines = [title, "-" * len(title)]
    for key in sorted(metrics):
        value = metrics[key]
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)
