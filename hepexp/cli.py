"""The command-line tasks: ``hepexp-train``, ``hepexp-evaluate``, ``hepexp-convert``.

Hydra applications on the config tree shipped in the package (``pkg://hepexp.conf``); the
``train.py``, ``evaluate.py`` and ``convert.py`` of a clone call the same functions. A user's
own config directory joins ours with ``--config-dir DIR`` (searched first: its groups and
experiments sit beside ours) or ``hydra.searchpath=[file://DIR]``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import hepexp.run  # noqa: F401  (registers the config resolvers)
from hepexp.run.common import plain_overrides
from hepexp.run.convert import convert
from hepexp.run.evaluate import evaluate
from hepexp.run.train import train

CONFIG_PATH = "pkg://hepexp.conf"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    return train(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def _evaluate(cfg: DictConfig) -> None:
    evaluate(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="convert")
def _convert(cfg: DictConfig) -> None:
    convert(cfg)


def train_main() -> None:
    """``hepexp-train [overrides]``: train a model (``python train.py`` in a clone)."""
    _train()


def evaluate_main() -> None:
    """``hepexp-evaluate ckpt_path=... [data.<key>=... model.<key>=...]``: physics metrics."""
    sys.argv[1:] = plain_overrides(sys.argv[1:])
    _evaluate()


def convert_main() -> None:
    """``hepexp-convert ckpt_path=... input=... output=... [mode=...]``: latents, tokens, tracks."""
    sys.argv[1:] = plain_overrides(sys.argv[1:])
    _convert()
