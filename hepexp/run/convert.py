"""The conversion task: latents, tokens or tracks from a trained model."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hepexp.run.common import build_datamodule, log, model_from_checkpoint
from hepexp.run.evaluate import overrides_of


def convert(cfg: DictConfig) -> dict:
    """Run ``model.convert`` on ``cfg.input`` -> ``cfg.output`` with ``cfg.mode``/``cfg.options``."""
    model, run_cfg = model_from_checkpoint(cfg.ckpt_path, overrides_of(cfg))
    datamodule = build_datamodule(run_cfg.data, model.view)
    options = OmegaConf.to_container(cfg.options, resolve=True) if "options" in cfg else {}
    result = model.convert(
        datamodule, Path(cfg.input), Path(cfg.output), mode=cfg.get("mode"), **options
    )
    log.info("converted %s -> %s: %s", cfg.input, cfg.output, result)
    return result
