"""The Hydra sweeper plugin: ``python train.py -m hparams_search=<model>_optuna``.

Hydra finds sweepers only in the ``hydra_plugins`` namespace, so the class lives here; the
work is done by :mod:`hepexp.sweep`. Its config is ``hepexp/conf/hydra/sweeper/optuna.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("hepexp")

_DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}


class OptunaSweeper(Sweeper):
    """Runs ``n_trials`` trials of an Optuna study, ``n_jobs`` at a time, through the launcher.

    Parameters mirror ``hepexp/conf/hydra/sweeper/optuna.yaml``: ``direction`` (min/max),
    ``study_name``, ``storage`` (SQLAlchemy URL; null: ``optuna.db`` in the sweep dir),
    ``n_trials`` (the study's total, shared by every process attached to it), ``n_jobs``
    (trials per launcher batch), ``max_failure_rate`` (stop once more than this fraction of
    ``n_trials`` failed here), ``sampler``/``pruner`` (``_target_`` configs), ``params``
    (search space in Hydra's sweep syntax), ``heartbeat_interval`` (seconds; null: off).
    """

    def __init__(
        self,
        direction: str = "minimize",
        study_name: str = "hepexp",
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.25,
        sampler: DictConfig | None = None,
        pruner: DictConfig | None = None,
        params: DictConfig | None = None,
        heartbeat_interval: int | None = 60,
    ) -> None:
        from hepexp.errors import ConfigError

        if str(direction) not in _DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction must be one of {sorted(_DIRECTIONS)}")
        if not study_name:
            raise ConfigError("hydra.sweeper.study_name must be set (the study's name)")
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and n_jobs must be >= 1")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ConfigError("hydra.sweeper.max_failure_rate must be within [0, 1]")
        self.direction = _DIRECTIONS[str(direction)]
        self.study_name = str(study_name)
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.heartbeat_interval = heartbeat_interval
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from hepexp.sweep.report import write_results
        from hepexp.sweep.space import parse_search_space
        from hepexp.sweep.study import (
            Heartbeat,
            claim_trial,
            display_url,
            make_storage,
            open_study,
            storage_url,
            trial_id,
        )

        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = parse_search_space(
            [f"{k}={v}" for k, v in self.params.items()] + list(arguments), parser
        )
        if not space:
            from hepexp.errors import ConfigError

            raise ConfigError(
                "nothing to search: set hydra.sweeper.params or sweep a key on the command "
                "line (key=choice(a,b), key=interval(lo,hi), key=range(a,b))"
            )
        url = storage_url(self.storage, sweep_dir)
        storage = make_storage(url, self.heartbeat_interval)
        sampler, n_trials = self._sampler(space)
        study, created = open_study(
            self.study_name, storage, self.direction, sampler, self._pruner()
        )
        if not created:
            sampler.reseed_rng()  # a seeded sampler would replay the first process's draws
        done = len(study.trials)
        log.info(
            "Optuna study '%s' (%s, %s): %s; running until it holds %d trials, %d at a time",
            self.study_name,
            self.direction,
            display_url(url),
            "new" if created else f"resumed with {done} trials",
            n_trials,
            self.n_jobs,
        )
        distributions = {key: param.distribution for key, param in space.items()}
        worker = f"{socket.gethostname()}:{os.getpid()}"
        max_failures = math.floor(self.max_failure_rate * n_trials)
        failures = 0
        returns: list[list[JobReturn]] = []
        with Heartbeat(storage, self.heartbeat_interval) as heartbeat:
            while True:
                batch = []
                for _ in range(self.n_jobs):
                    trial = claim_trial(study, storage, n_trials, distributions, worker)
                    if trial is None:
                        break
                    batch.append(trial)
                    heartbeat.trial_ids.add(trial_id(trial))
                if not batch:
                    break
                results = self._launch(study, batch, space, fixed)
                for trial in batch:
                    heartbeat.trial_ids.discard(trial_id(trial))
                for trial, result in zip(batch, results, strict=True):
                    failures += self._tell(study, storage, trial, result) == "fail"
                returns.append(list(results))
                if failures > max_failures:
                    write_results(study, sweep_dir, self.config)
                    raise HydraException(
                        f"{failures} trials failed, more than max_failure_rate="
                        f"{self.max_failure_rate} of n_trials={n_trials} allows; stopping the "
                        f"sweep (resume it from {display_url(url)})"
                    )
        write_results(study, sweep_dir, self.config)
        return returns

    # -- helpers -------------------------------------------------------------------------------
    def _sampler(self, space: dict) -> tuple[Any, int]:
        """The sampler, and n_trials capped at the grid size for the grid sampler."""
        import optuna
        from hydra.utils import get_class, instantiate

        from hepexp.sweep.study import SweepGridSampler

        if not self.sampler_cfg:
            return optuna.samplers.TPESampler(), self.n_trials
        if issubclass(get_class(self.sampler_cfg._target_), optuna.samplers.GridSampler):
            grid = {key: param.grid() for key, param in space.items()}
            size = math.prod(len(v) for v in grid.values())
            if size < self.n_trials:
                log.info(
                    "the grid has %d points: running %d trials, not %d", size, size, self.n_trials
                )
            sampler = instantiate(
                self.sampler_cfg, _target_=SweepGridSampler, search_space=grid, _convert_="all"
            )
            return sampler, min(size, self.n_trials)
        return instantiate(self.sampler_cfg, _convert_="all"), self.n_trials

    def _pruner(self) -> Any:
        from hydra.utils import instantiate

        return instantiate(self.pruner_cfg) if self.pruner_cfg else None

    def _launch(self, study: Any, batch: list, space: dict, fixed: list[str]) -> Any:
        """Run one batch of trials through the launcher (each job learns its trial id from
        ``hydra.job.env_set`` and writes into a sub-directory named after the trial number)."""
        from optuna.trial import TrialState

        from hepexp.sweep.study import trial_id
        from hepexp.sweep.trial import TRIAL_ENV

        overrides = [
            [
                *fixed,
                *(space[key].override(value) for key, value in trial.params.items()),
                f"++hydra.job.env_set.{TRIAL_ENV}={trial_id(trial)}",
                f"hydra.sweep.subdir={trial.number}",
            ]
            for trial in batch
        ]
        try:
            self.validate_batch_is_legal(overrides)
            results = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except BaseException:  # a bad config, Ctrl-C: the claimed trials did not run
            for trial in batch:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        self.job_idx += len(batch)
        return results

    def _tell(self, study: Any, storage: Any, trial: Any, result: JobReturn) -> str:
        """Record a finished job in the study: complete, pruned or failed."""
        import optuna
        from optuna.trial import TrialState

        from hepexp.sweep.study import PRUNED_ATTR, trial_id

        # the pruning callback marks the trial in the database, wherever the job ran
        pruned = PRUNED_ATTR in storage.get_trial(trial_id(trial)).user_attrs
        reason = None
        if not pruned:
            try:
                value = result.return_value  # re-raises the job's exception
            except optuna.TrialPruned:  # a task that prunes on its own
                pruned = True
            except Exception as err:  # the job raised: the trial failed, the sweep goes on
                log.warning("trial %d failed: %r", trial.number, err, exc_info=err)
                reason = repr(err)
            else:
                if value is None or not math.isfinite(float(value)):
                    reason = "objective " + ("missing" if value is None else f"returned {value}")
                    log.warning("trial %d failed: %s", trial.number, reason)
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned", trial.number)
            return "pruned"
        if reason is not None:
            trial.set_user_attr("hepexp:fail_reason", reason[:1000])
            study.tell(trial, state=TrialState.FAIL)
            return "fail"
        study.tell(trial, float(value))
        log.info("trial %d: objective %.6g", trial.number, float(value))
        return "complete"
