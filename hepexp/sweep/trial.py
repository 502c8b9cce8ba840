"""The training job's side of a sweep: which trial it runs, pruning, W&B grouping.

The sweeper hands each job its trial through the environment variable ``HEPEXP_OPTUNA_TRIAL``
(the trial's storage id, set with ``hydra.job.env_set`` so that it reaches jobs run in this
process, in other processes and on other machines alike). The storage and study come from the
job's own Hydra config (``hydra.sweeper``). The training task adds :class:`OptunaPruning` when a
trial is active: it reports the monitored metric to the study after each validation and stops
training when the pruner says so; the task then raises ``optuna.TrialPruned``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import optuna
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from hepexp.errors import ConfigError
from hepexp.sweep.study import PRUNED_ATTR, make_storage, storage_url

log = logging.getLogger(__name__)

TRIAL_ENV = "HEPEXP_OPTUNA_TRIAL"

_CONTINUE, _PRUNE, _DIVERGED = 0, 1, 2


@dataclass(frozen=True)
class TrialRef:
    """Plain data naming one trial: it travels to DDP worker processes and loads it there."""

    storage: str
    study_name: str
    trial_id: int
    number: int
    params: dict
    pruner: dict | None = None

    def load(self) -> optuna.Trial:
        """The live trial (reports and pruning decisions go through the database)."""
        from hydra.utils import instantiate

        pruner = instantiate(self.pruner) if self.pruner else optuna.pruners.NopPruner()
        study = optuna.load_study(
            study_name=self.study_name,
            storage=make_storage(self.storage),
            sampler=optuna.samplers.RandomSampler(),  # the job samples nothing
            pruner=pruner,
        )
        return optuna.trial.Trial(study, self.trial_id)

    def pruned_at(self) -> int | None:
        """The epoch after which the pruner stopped this trial, or None."""
        storage = make_storage(self.storage)
        return storage.get_trial(self.trial_id).user_attrs.get(PRUNED_ATTR)


def active_trial() -> TrialRef | None:
    """The trial this job runs, when it was started by the Optuna sweeper; else None."""
    value = os.environ.get(TRIAL_ENV)
    if not value:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or "storage" not in HydraConfig.get().sweeper:
        raise ConfigError(f"{TRIAL_ENV}={value} is set, but this job is not run by the sweeper")
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    url = storage_url(sweeper.storage, hydra_cfg.sweep.dir)
    trial = make_storage(url).get_trial(int(value))
    pruner = sweeper.get("pruner")
    return TrialRef(
        storage=url,
        study_name=str(sweeper.study_name),
        trial_id=int(value),
        number=trial.number,
        params=dict(trial.params),
        pruner=OmegaConf.to_container(pruner, resolve=True) if pruner else None,
    )


def label_loggers(logger_cfg: DictConfig | None, trial: TrialRef) -> None:
    """Group the trial's logger runs by study and name them after the trial (where the logger
    config has ``group``/``name`` keys left null, as W&B's has)."""
    for node in (logger_cfg or {}).values():
        if not isinstance(node, DictConfig):
            continue
        with open_dict(node):
            if "group" in node and node.group is None:
                node.group = trial.study_name
            if "name" in node and node.name is None:
                node.name = f"{trial.study_name}-trial-{trial.number}"
            if "job_type" in node and node.job_type is None:
                node.job_type = "optuna-trial"


def trial_summary(trial: TrialRef) -> dict[str, Any]:
    """What loggers record about the trial next to the run config."""
    return {"optuna": {"study": trial.study_name, "trial": trial.number, "params": trial.params}}


class OptunaPruning(pl.Callback):
    """Reports ``monitor`` to the trial after every validation; stops when the pruner says so.

    Rank 0 reports and decides; the decision is broadcast so that all ranks stop together. A
    non-finite value also stops training (the trial then fails with a NaN objective).
    """

    def __init__(self, trial: TrialRef, monitor: str) -> None:
        self.trial_ref = trial
        self.monitor = monitor
        self._trial: optuna.Trial | None = None

    def __getstate__(self) -> dict:  # the live trial holds a database engine: not picklable
        return {**self.__dict__, "_trial": None}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        decision = _CONTINUE
        epoch = trainer.current_epoch
        if trainer.is_global_zero:
            decision = self._report(trainer.callback_metrics.get(self.monitor), epoch)
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision == _PRUNE:
            log.info("trial %d pruned after epoch %d", self.trial_ref.number, epoch)
            trainer.should_stop = True
        elif decision == _DIVERGED:
            log.warning("trial %d: %s is not finite; stopping", self.trial_ref.number, self.monitor)
            trainer.should_stop = True

    def _report(self, value: Any, epoch: int) -> int:
        if value is None:
            raise ConfigError(
                f"optimized_metric '{self.monitor}' was not logged in validation; "
                "the pruner has nothing to judge"
            )
        value = float(value)
        if not math.isfinite(value):
            return _DIVERGED
        if self._trial is None:
            self._trial = self.trial_ref.load()
        self._trial.report(value, step=epoch)
        if self._trial.should_prune():
            self._trial.set_user_attr(PRUNED_ATTR, epoch)
            return _PRUNE
        return _CONTINUE
