"""The evaluation task: rebuild a trained model from its checkpoint and measure its physics."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from hepexp.checkpoint import build_datamodule
from hepexp.plotting import label_plots_for_source
from hepexp.run.common import checkpoint_overrides, format_metrics, log, model_from_checkpoint
from hepexp.run.wandb_logging import log_evaluation_to_wandb
from hepexp.utils.io import write_json


def evaluation_trainer(
    trainer_cfg: DictConfig,
    out_dir: Path,
    accelerator: str | None = None,
    precision: str | None = None,
) -> pl.Trainer:
    """A single-device trainer for inference with the training run's accelerator and precision.

    A model trained on a GPU is evaluated on the CPU (in float32) where no GPU is available."""
    accelerator = accelerator or trainer_cfg.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        log.warning(
            "the model was trained with accelerator=%s, but no GPU is available here: "
            "evaluating on the CPU in float32 (set accelerator= and precision= to choose)",
            accelerator,
        )
        accelerator, precision = "cpu", precision or "32-true"
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision or trainer_cfg.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; write metrics.json and plots to the run dir."""
    model, run_cfg = model_from_checkpoint(cfg.ckpt_path, *checkpoint_overrides(cfg))
    label_plots_for_source(run_cfg.data.get("source"))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = build_datamodule(run_cfg.data, model.view)
    trainer = evaluation_trainer(
        run_cfg.trainer, out_dir, cfg.get("accelerator"), cfg.get("precision")
    )
    metrics = model.evaluate(trainer, datamodule, out_dir, split=cfg.split)
    metrics = {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "split": cfg.split, **metrics}
    write_json(out_dir / "metrics.json", metrics)
    log.info("%s", format_metrics(metrics, f"Evaluation ({out_dir})"))
    log_evaluation_to_wandb(cfg, metrics, out_dir)
    return metrics
