"""The conversion task: latents, tokens or tracks from a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hepexp.checkpoint import build_datamodule
from hepexp.run.common import checkpoint_overrides, log, model_from_checkpoint
from hepexp.utils.io import write_json


def convert(cfg: DictConfig) -> dict:
    """Run ``model.convert`` on ``cfg.input`` -> ``cfg.output`` with ``cfg.mode``/``cfg.options``.

    The model runs on ``cfg.device`` (default: the GPU when there is one); the returned summary
    is also written to ``convert.json`` in the run directory."""
    model, run_cfg = model_from_checkpoint(cfg.ckpt_path, *checkpoint_overrides(cfg))
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    datamodule = build_datamodule(run_cfg.data, model.view)
    options = OmegaConf.to_container(cfg.options, resolve=True) if "options" in cfg else {}
    result = model.convert(
        datamodule, Path(cfg.input), Path(cfg.output), mode=cfg.get("mode"), **options
    )
    if "paths" in cfg and cfg.paths.get("output_dir"):
        write_json(Path(cfg.paths.output_dir) / "convert.json", result)
    log.info("converted %s -> %s: %s", cfg.input, cfg.output, result)
    return result
