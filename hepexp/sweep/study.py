"""The Optuna study a sweep works on: storage, creation or resumption, and claiming trials.

Any number of sweep processes (on any number of machines) may share one study through a
database. Each claims trials one at a time under a lock held in that database, so that together
they create exactly ``n_trials`` trials and no trial is run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from hepexp.errors import ConfigError

log = logging.getLogger(__name__)

#: file name of the default storage, inside the sweep directory
DEFAULT_DB = "optuna.db"
#: trial states that use up one of the study's ``n_trials``
COUNTED_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: user attribute of a trial stopped by the pruner (value: the epoch)
PRUNED_ATTR = "hepexp:pruned_at"
#: user attribute naming the sweep process that ran a trial
WORKER_ATTR = "hepexp:worker"


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The SQLAlchemy URL of the study storage: ``storage`` or a SQLite file in ``sweep_dir``."""
    if storage:
        return str(storage)
    return f"sqlite:///{Path(sweep_dir).resolve() / DEFAULT_DB}"


def make_storage(url: str, heartbeat_interval: int | None = None) -> RDBStorage:
    """An Optuna RDB storage at ``url`` (SQLite, PostgreSQL, MySQL: any SQLAlchemy URL).

    With ``heartbeat_interval`` (seconds), trials of sweep processes that died without a word
    (killed, node lost) are marked failed once their heartbeat is 2 intervals old.
    """
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # concurrent jobs report to one file: wait for the write lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    heartbeat = {}
    if heartbeat_interval:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": 2 * heartbeat_interval,
        }
    try:
        # processes starting together would race to create the tables: one at a time
        lock_engine = create_engine(url, poolclass=NullPool, **engine_kwargs)
        try:
            with database_lock(lock_engine, "schema"), _quiet_heartbeat():
                return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        finally:
            lock_engine.dispose()
    except ImportError as err:
        raise ConfigError(
            f"hydra.sweeper.storage={display_url(url)} needs a database driver: {err} "
            "(PostgreSQL: pip install 'hepexp[postgres]')"
        ) from err


@contextlib.contextmanager
def _quiet_heartbeat() -> Iterator[None]:
    """Optuna flags heartbeats as experimental and meant for ``Study.optimize``; the sweeper
    records them itself (:class:`Heartbeat`), so these warnings say nothing useful."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield


def display_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: SQLAlchemy says so later
        return url


def open_study(
    name: str,
    storage: RDBStorage,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study ``name`` or attach to it; returns ``(study, created_here)``.

    Creation is atomic in the database, so of several processes starting together exactly one
    creates the study. Attaching to a study optimised in the other direction is an error.
    """
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=direction, sampler=sampler, pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if len(study.directions) != 1 or study.direction.name.lower() != direction:
        have = [d.name.lower() for d in study.directions]
        raise ConfigError(
            f"study '{name}' in {display_url(storage.url)} optimises {have}, not '{direction}'"
        )
    return study, False


@contextlib.contextmanager
def database_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock ``name``, shared by every process using this database.

    PostgreSQL: an advisory lock; MySQL: ``GET_LOCK``; SQLite: a lock file beside the database.
    """
    key = hashlib.sha1(f"hepexp-optuna:{name}".encode()).digest()
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if backend == "postgresql":
        number = int.from_bytes(key[:8], "big", signed=True)
        acquire, release = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"
        args: dict = {"k": number}
    elif backend in ("mysql", "mariadb"):
        acquire, release = "SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"
        args = {"k": key.hex()[:60]}
    else:
        log.warning("no lock for %s databases: parallel sweeps may overshoot n_trials", backend)
        yield
        return
    with engine.connect() as conn:
        conn.execute(text(acquire), args)
        try:
            yield
        finally:
            conn.execute(text(release), args)


def claim_trial(
    study: optuna.Study,
    storage: RDBStorage,
    n_trials: int,
    distributions: Mapping[str, BaseDistribution],
    worker: str,
) -> optuna.Trial | None:
    """A new trial with its parameters sampled, or None once the study holds ``n_trials``.

    Counts the trials of every process (running, complete, pruned, failed; not enqueued ones
    still waiting), under the database lock, so that shared studies stop at exactly
    ``n_trials``. Stale trials of dead processes are marked failed first.
    """
    with database_lock(storage.engine, f"study:{study.study_name}"), _quiet_heartbeat():
        optuna.storages.fail_stale_trials(study)
        used = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
        if used >= n_trials:
            return None
        trial = study.ask(dict(distributions))
        trial.set_user_attr(WORKER_ATTR, worker)
        if storage.get_heartbeat_interval():
            storage.record_heartbeat(trial_id(trial))
    return trial


class SweepGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``Study.stop()`` once the grid is exhausted (allowed
    only inside ``Study.optimize``); the sweeper caps ``n_trials`` at the grid size instead."""

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None


def trial_id(trial: optuna.Trial) -> int:
    """The storage id of ``trial`` (unique in the database, unlike its number)."""
    return trial._trial_id  # Optuna has no public accessor; its own integrations use this


class Heartbeat:
    """Records a heartbeat for the trials in flight every ``interval`` seconds (a thread)."""

    def __init__(self, storage: RDBStorage, interval: int | None) -> None:
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # a lost connection must not kill the sweep
                    log.warning("optuna heartbeat of trial id %d failed: %s", trial_id, err)
