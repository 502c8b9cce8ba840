"""Experiment and search files state only what they change.

A value that an experiment (or hparams_search) file sets to exactly what the composed defaults
already hold is noise at best, and at worst pins an old default when the default moves on.
Each file's values are compared with the config composed from the same group choices without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CONF_DIR, compose_config

GROUPS = ("experiment", "hparams_search")
FILES = sorted((CONF_DIR / g / f"{p.stem}") for g in GROUPS for p in (CONF_DIR / g).glob("*.yaml"))


def _group_choices(defaults: list[Any], group: str) -> list[str]:
    """The file's defaults list as overrides: ``override /data: trackml`` entries (hydra/ and
    sweeper choices left out) and files of its own group that it builds on."""
    out = []
    for entry in defaults or []:
        if isinstance(entry, str):
            if entry != "_self_":
                out.append(f"{group}={entry}")
            continue
        for key, value in entry.items():
            group = key.removeprefix("override ").strip().lstrip("/")
            if key.startswith("override") and not group.startswith("hydra"):
                out.append(f"{group}={value}")
    return out


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: node}


def _lookup(cfg: Any, dotted: str) -> tuple[bool, Any]:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False, None
        node = node[part]
    return True, node


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_value_restates_the_default(tmp_path: Path, path: Path) -> None:
    raw = yaml.safe_load(path.with_suffix(".yaml").read_text()) or {}
    choices = _group_choices(raw.pop("defaults", []), path.parent.name)
    values = {k: v for k, v in _leaves(raw).items() if not k.startswith("hydra.")}
    base = compose_config(tmp_path, choices)
    restated = []
    for key, value in values.items():
        present, default = _lookup(base, key)
        if present and not hasattr(default, "keys") and default == value:
            restated.append(f"{key}: {value!r}")
    assert not restated, f"{path.parent.name}/{path.name}.yaml restates defaults: {restated}"


def test_one_scheduler_group_serves_every_model(tmp_path: Path) -> None:
    """The one-cycle schedule is written once (model/scheduler/one_cycle.yaml); models and
    experiments choose it and set their warm-up share."""
    expected = {
        ("regressor_flash", "trackml"): 0.15,
        ("jet_ae", "atlas_jets"): 0.1,
        ("om2vec", "prometheus"): 0.05,
        ("om2vec_reference", "prometheus"): 0.05,
    }
    for (model, data), pct_start in expected.items():
        cfg = compose_config(tmp_path, [f"model={model}", f"data={data}"])
        assert cfg.model.scheduler._target_.endswith("TimedOneCycleLR"), model
        assert (cfg.model.scheduler.pct_start, cfg.model.scheduler_interval) == (pct_start, "step")
        assert cfg.model.scheduler.max_lr == cfg.model.optimizer.lr
    # a constant rate, as the VQ-VAEs have by default
    flat = compose_config(tmp_path, ["model=om2vec", "data=prometheus", "model.scheduler=null"])
    assert flat.model.scheduler is None
    assert compose_config(tmp_path, ["model=vqvae_cond"]).model.scheduler is None
    tuned = compose_config(tmp_path, ["experiment=vqvae_cond_tuned"])
    assert (tuned.model.scheduler.pct_start, tuned.model.optimizer.lr) == (0.05, 1.0e-3)
    assert tuned.model.scheduler.max_lr == 1.0e-3
