"""The training task: build data, model, callbacks, loggers and trainer from the config; fit."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from hepexp import __version__
from hepexp.checkpoint import CHECKPOINT_KEY, build_datamodule, build_model, load_checkpoint
from hepexp.errors import ConfigError
from hepexp.loggers import finish_wandb
from hepexp.plotting import label_plots_for_source
from hepexp.run.common import check_pairing, format_metrics, log, plain_config
from hepexp.run.resolvers import process_rank
from hepexp.run.wandb_logging import log_evaluation_to_loggers, wandb_run_info
from hepexp.sweep.trial import OptunaPruning, active_trial, label_loggers, trial_summary
from hepexp.utils.io import write_json


class ConfigInCheckpoint(pl.Callback):
    """Stores the resolved run config (plain data) and the W&B run, if any, in every
    checkpoint."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = {"config": self.config, "version": __version__}
        if (run := wandb_run_info(trainer)) is not None:
            checkpoint[CHECKPOINT_KEY]["wandb"] = run  # evaluate.py logs to this run


def _launched_externally() -> bool:
    """True when processes are started by torchrun/SLURM, not by Lightning re-running the CLI."""
    env = os.environ
    return "LOCAL_RANK" in env or int(env.get("SLURM_NTASKS", "1")) > 1


def guard_multirun_ddp(cfg: DictConfig) -> None:
    """Under ``-m``, Lightning's ``ddp`` re-runs the command line in each child, which would
    start one sweep per rank; switch such runs to ``ddp_spawn`` and say so."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    strategy = cfg.trainer.get("strategy")
    if strategy not in ("ddp", "ddp_find_unused_parameters_true") or _launched_externally():
        return
    replacement = strategy.replace("ddp", "ddp_spawn", 1)
    log.warning(
        "trainer.strategy=%s inside a multirun would launch a sweep per rank (Lightning "
        "re-runs the command line in each DDP child); using %s instead",
        strategy,
        replacement,
    )
    with open_dict(cfg):
        cfg.trainer.strategy = replacement


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Objects of a keyed config dict (``callbacks``, ``logger``); null entries are skipped."""
    if not node:
        return []
    return [instantiate(v, _convert_="all") for v in node.values() if v and "_target_" in v]


def optimized_value(trainer: pl.Trainer, metric: str | None) -> float | None:
    """Best value of ``metric`` seen by a checkpoint callback monitoring it, else its last value."""
    if not metric:
        return None
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) == metric and cb.best_model_score is not None:
            return float(cb.best_model_score)
    value = trainer.callback_metrics.get(metric)
    return None if value is None else float(value)


def seconds_of(duration: str | float | int) -> float:
    """Seconds of a duration given as ``"DD:HH:MM:SS"`` (as ``trainer.max_time``) or a number."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = str(duration).split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 4:
        raise ConfigError(f"expected a duration 'DD:HH:MM:SS' or seconds, got {duration!r}")
    return sum(v * f for v, f in zip(reversed(values), (1, 60, 3600, 86400), strict=False))


def duration_string(seconds: float) -> str:
    """``"DD:HH:MM:SS"`` of whole seconds (the format of ``trainer.max_time``)."""
    rest, secs = divmod(int(seconds), 60)
    rest, minutes = divmod(rest, 60)
    days, hours = divmod(rest, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def fit_into_budget(cfg: DictConfig, datamodule: pl.LightningDataModule, start: float) -> None:
    """Fit the whole job into ``cfg.time_budget``: prepare the data now, then give training what
    is left of the budget minus ``cfg.time_reserve`` seconds (the calibration and the test after
    it), as ``trainer.max_time`` (the smaller one if that is set too)."""
    budget = seconds_of(cfg.time_budget)
    reserve = float(cfg.get("time_reserve") or 0.0)
    if process_rank() == 0:  # the other ranks of a torchrun/srun launch wait in trainer.fit
        datamodule.prepare_data()
    prepared = time.monotonic() - start
    left = budget - prepared - reserve
    if cfg.trainer.get("max_time") is not None:
        left = min(left, seconds_of(cfg.trainer.max_time))
    if left < 1:
        raise ConfigError(
            f"time_budget {cfg.time_budget}: nothing is left for training after {prepared:.0f} s "
            f"of data preparation and time_reserve {reserve:.0f} s"
        )
    with open_dict(cfg):
        cfg.trainer.max_time = duration_string(left)
    log.info(
        "time budget %s: %.0f s of data preparation, %d s of training, %.0f s reserved after it",
        cfg.time_budget,
        prepared,
        int(left),
        reserve,
    )


def train(cfg: DictConfig) -> float | None:
    """Train the configured model; return the optimised validation metric (for sweepers).

    Inside an Optuna sweep (see :mod:`hepexp.sweep`) the monitored metric is reported to the
    trial after each validation, and ``optuna.TrialPruned`` is raised if the pruner stopped it.
    """
    start = time.monotonic()
    view = check_pairing(cfg)
    guard_multirun_ddp(cfg)
    trial = active_trial()
    if trial is not None:
        label_loggers(cfg.get("logger"), trial)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    label_plots_for_source(cfg.data.get("source"))

    output_dir = Path(cfg.paths.output_dir)
    config = plain_config(cfg)
    datamodule = build_datamodule(cfg.data, view)
    if cfg.get("time_budget") is not None:
        fit_into_budget(cfg, datamodule, start)
    model = build_model(cfg.model)
    callbacks = _instantiate_dict(cfg.get("callbacks")) + [ConfigInCheckpoint(config)]
    if trial is not None:
        callbacks.append(OptunaPruning(trial, cfg.optimized_metric))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    for logger in trainer.loggers:
        logger.log_hyperparams(config)
        if trial is not None:
            logger.log_hyperparams(trial_summary(trial))

    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if trial is not None and (epoch := trial.pruned_at()) is not None:
            failed = False
            raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}")

        value = optimized_value(trainer, cfg.get("optimized_metric"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if value is not None:
            metrics[f"best/{cfg.optimized_metric}"] = value
        if trainer.is_global_zero:
            if cfg.get("evaluate_after") and not trainer.fast_dev_run:
                metrics.update(_evaluate_best(cfg, trainer, output_dir))
            metrics["job_seconds"] = time.monotonic() - start
            write_json(output_dir / "metrics.json", metrics)
            log.info("%s", format_metrics(metrics, f"Metrics ({output_dir})"))
            if trial is not None and value is not None:
                for logger in trainer.loggers:
                    logger.log_metrics({f"best/{cfg.optimized_metric}": value})
        if value is not None and math.isnan(value):
            log.warning("the optimised metric %s is NaN", cfg.optimized_metric)
        failed = False
        return value
    finally:
        finish_wandb(failed)


def _evaluate_best(cfg: DictConfig, trainer: pl.Trainer, output_dir: Path) -> dict:
    """Evaluate the best checkpoint on the test split, in one process, into ``evaluation/``."""
    from hepexp.run.evaluate import evaluation_trainer

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    model = build_model(cfg.model)
    if best:
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    else:
        model = trainer.lightning_module
    datamodule = build_datamodule(cfg.data, check_pairing(cfg))
    eval_dir = output_dir / "evaluation"
    eval_dir.mkdir(parents=True, exist_ok=True)
    results = model.evaluate(evaluation_trainer(cfg.trainer, eval_dir), datamodule, eval_dir)
    write_json(eval_dir / "metrics.json", results)
    log_evaluation_to_loggers(trainer, results, eval_dir)
    log.info(
        "%s", format_metrics(results, f"Evaluation of {best or 'the final model'} (test split)")
    )
    return {f"test/{k}": v for k, v in results.items() if isinstance(v, (int, float))}
