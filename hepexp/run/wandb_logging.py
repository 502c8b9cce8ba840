"""What the tasks send to W&B besides the training curves: the W&B run a checkpoint was trained
in (stored in the checkpoint), and evaluations (metrics, plots, ``metrics.json``), logged to
that training run or to a new run linked to it.

``wandb`` is imported only where a W&B run is used: everything else runs without it.
"""

from __future__ import annotations

import shutil
from numbers import Real
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from hepexp.checkpoint import CHECKPOINT_KEY, load_checkpoint
from hepexp.errors import ConfigError
from hepexp.loggers import wandb_offline
from hepexp.run.common import log

#: values of ``wandb.mode`` in evaluate.yaml
MODES = ("resume", "new", "off")


def _wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def wandb_run_info(trainer: pl.Trainer) -> dict[str, str | None] | None:
    """Identity of the trainer's W&B run (id, project, entity, name, group, dir, mode) as plain
    strings for the checkpoint; None without a W&B logger, with W&B disabled, and on ranks
    other than 0."""
    loggers = _wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return None
    run = loggers[0].experiment
    if getattr(run, "disabled", False):
        return None
    return {
        "id": run.id,
        "project": run.project,
        "entity": run.entity or None,
        "name": run.name,
        "group": run.group or None,
        "dir": str(Path(loggers[0].save_dir or ".").resolve()),
        "mode": "offline" if run.offline else "online",
    }


def log_evaluation(run: Any, metrics: dict[str, Any], out_dir: Path, prefix: str) -> None:
    """Log an evaluation to the W&B ``run`` under ``prefix``: its numbers and strings as summary
    values, a ``<prefix>metrics`` table, every PNG of ``out_dir`` as an image
    (``<prefix>plots/<name>``) and ``out_dir/metrics.json`` as the file ``<prefix>metrics.json``."""
    import wandb

    scalars = {k: v for k, v in metrics.items() if isinstance(v, (Real, str))}
    run.summary.update({prefix + k: v for k, v in scalars.items()})
    numbers = [[k, float(v)] for k, v in scalars.items() if isinstance(v, Real)]
    logged: dict[str, Any] = {
        f"{prefix}metrics": wandb.Table(columns=["metric", "value"], data=numbers)
    }
    for plot in sorted(Path(out_dir).glob("*.png")):
        logged[f"{prefix}plots/{plot.stem}"] = wandb.Image(str(plot))
    run.log(logged)
    source = Path(out_dir) / "metrics.json"
    if source.exists():
        copy = Path(run.dir) / prefix / "metrics.json"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        run.save(str(copy), base_path=run.dir, policy="now")


def log_evaluation_to_loggers(
    trainer: pl.Trainer, metrics: dict[str, Any], out_dir: Path, prefix: str = "test/"
) -> None:
    """Log the evaluation at the end of training to the trainer's W&B run, if it has one."""
    for logger in _wandb_loggers(trainer):
        if not getattr(logger.experiment, "disabled", False):
            log_evaluation(logger.experiment, metrics, out_dir, prefix)


def log_evaluation_to_wandb(cfg: DictConfig, metrics: dict[str, Any], out_dir: Path) -> None:
    """Log the evaluation of ``cfg.ckpt_path`` as ``cfg.wandb`` says (see evaluate.yaml).

    ``resume``: to the W&B run the checkpoint was trained in, resumed by its id (nothing when
    it was trained without W&B); ``new``: to a new run of job type ``evaluation`` in the
    training run's project and group, with the training run's id in its config; ``off``.
    """
    settings = cfg.get("wandb") or {}
    mode = settings.get("mode") or "off"
    if mode not in MODES:
        raise ConfigError(f"wandb.mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "off":
        return
    training = load_checkpoint(cfg.ckpt_path)[CHECKPOINT_KEY].get("wandb")
    if mode == "resume" and training is None:
        log.info("%s was trained without W&B: evaluation not logged to W&B", cfg.ckpt_path)
        return
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed: the evaluation is not logged to W&B")
        return

    if mode == "resume":
        init = {
            "id": training["id"],
            "resume": "allow",  # "must" would fail online for a run trained offline, not synced
            "project": training["project"],
            "entity": training["entity"],
        }
    else:
        linked = training or {}
        init = {
            "project": linked.get("project") or settings.get("project"),
            "entity": linked.get("entity") or settings.get("entity"),
            "group": linked.get("group"),
            "name": f"{linked['name']}-evaluation" if linked else None,
            "job_type": "evaluation",
            "config": {
                "training_run_id": linked.get("id"),
                "checkpoint": str(cfg.ckpt_path),
                "split": cfg.split,
            },
        }
    offline = wandb_offline(settings.get("offline"), out_dir)
    run = wandb.init(dir=str(out_dir), mode="offline" if offline else None, **init)
    failed = True
    try:
        log_evaluation(run, metrics, out_dir, prefix=f"evaluate/{cfg.split}/")
        failed = False
    finally:
        run.finish(exit_code=1 if failed else 0)
    log.info("evaluation logged to W&B run %s (%s)", run.id, mode)
