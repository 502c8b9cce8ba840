"""What a sweep leaves behind: ``optimization_results.yaml`` and a W&B study summary run."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hepexp.utils.io import atomic_path

log = logging.getLogger(__name__)


def study_results(study: optuna.Study) -> dict[str, Any]:
    """Best trial, its parameters and the count of trials in each state."""
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "n_trials": sum(states.values()),
        "states": dict(sorted(states.items())),
        "best_trial": None,
        "best_value": None,
        "best_params": None,
    }
    if complete:
        best = study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
    return results


def write_results(
    study: optuna.Study, sweep_dir: Path, config: DictConfig | None = None
) -> dict[str, Any]:
    """Write ``optimization_results.yaml`` into the sweep dir (and a W&B summary run when the
    task logs to W&B); return the results."""
    results = study_results(study)
    with atomic_path(Path(sweep_dir) / "optimization_results.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(results))
    if results["best_trial"] is None:
        log.warning("study '%s': no trial completed", study.study_name)
    else:
        log.info(
            "study '%s': best trial %d, value %.6g, params %s",
            study.study_name,
            results["best_trial"],
            results["best_value"],
            results["best_params"],
        )
    if config is not None:
        settings = wandb_settings(config.get("logger"))
        if settings is not None:
            log_wandb_summary(study, results, settings, Path(sweep_dir))
    return results


def wandb_settings(logger_cfg: DictConfig | None) -> dict[str, Any] | None:
    """Project, entity, tags and offline flag of the task's W&B logger, if it has one."""
    for node in (logger_cfg or {}).values():
        if isinstance(node, DictConfig) and "wandb" in str(node.get("_target_", "")).lower():
            keys = ("project", "entity", "tags", "offline")
            return {k: OmegaConf.select(node, k, default=None) for k in keys}
    return None


def log_wandb_summary(
    study: optuna.Study, results: dict[str, Any], settings: dict[str, Any], sweep_dir: Path
) -> None:
    """One W&B run per study, in the trials' group: each complete trial's value and
    parameters as a step, and the best trial in the run summary."""
    import wandb

    from hepexp.loggers import wandb_offline

    offline = wandb_offline(settings.get("offline"), sweep_dir)
    run = wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        tags=list(settings.get("tags") or []),
        group=study.study_name,
        name=f"{study.study_name}-summary",
        job_type="optuna-study",
        dir=str(sweep_dir),
        # WANDB_MODE, when set, decides (e.g. disabled in tests)
        mode=None if os.environ.get("WANDB_MODE") else ("offline" if offline else "online"),
        config={"study_name": study.study_name, "direction": results["direction"]},
    )
    try:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for trial in sorted(complete, key=lambda t: t.number):
            scalars = {
                f"params/{k}": v for k, v in trial.params.items() if isinstance(v, (int, float))
            }
            run.log({"trial": trial.number, "value": trial.value, **scalars})
        run.summary.update(
            {
                "best_trial": results["best_trial"],
                "best_value": results["best_value"],
                "best_params": results["best_params"],
                "n_trials": results["n_trials"],
                **{f"n_{state}": n for state, n in results["states"].items()},
            }
        )
    finally:
        run.finish()
