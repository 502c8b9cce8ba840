"""Shared fixtures: composing configs with the compose API and running the entry points."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import hepexp.run  # noqa: F401  (registers resolvers)
from hepexp.run.common import plain_overrides

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "hepexp" / "conf"
# ../shared beside the repository; HEPEXP_SHARED overrides it (e.g. for git worktrees)
SHARED = Path(os.environ.get("HEPEXP_SHARED", ROOT.parent / "shared"))

#: small simulated datasets so that tests run in seconds
TINY_DATA = {
    "atlas_jets": [
        "data.simulation.n_train=3000",
        "data.simulation.n_val=600",
        "data.simulation.n_test=600",
    ],
    "prometheus": ["data.simulation.n_events=20", "data.batch_size=32"],
    "trackml": [
        "data.simulation.n_events=3",
        "data.simulation.n_particles=300",
        "data.splits={train:1,val:1,test:1}",
        "data.subevents_per_event=2",
        "data.prepare_workers=1",  # no process pool for three tiny events
    ],
}


#: run_entrypoint(env=ONE_THREAD) for the tiny pipeline runs: on shared cores, one torch thread
#: trains them several times faster than two
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


# -- what CI must have: a skip on a developer's clone, a failure under CI=true ------------------
# CI runs with ../shared beside the clone and a PostgreSQL server; a test that skipped there
# would let the run pass without checking anything.


def in_ci() -> bool:
    """Whether the tests run under CI (CI=true, as CI services set it)."""
    return os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip the test unless ``condition`` holds; under CI fail it instead, with ``reason``."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, reason: str) -> ModuleType:
    """Import ``name``, or :func:`require` fails/skips the test with ``reason``."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        require(False, f"{reason} ({err})")
        raise  # unreachable: require raised


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data; absent (a fresh clone without ../shared): see :func:`require`."""
    path = SHARED.joinpath("data", *parts)
    require(path.exists(), f"{path} is absent (../shared beside the repository, or HEPEXP_SHARED)")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Under CI, one line saying where the shared data was looked for and what it holds."""
    if in_ci():
        data = SHARED / "data"
        found = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
        held = ", ".join(found) if found else "ABSENT"
        terminalreporter.write_line(f"shared data ({data.resolve()}): {held}")


@pytest.fixture(autouse=True)
def _no_network_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))


def compose_config(
    tmp_path: Path, overrides: list[str] | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose a config like the CLI would, with data and logs under ``tmp_path``."""
    GlobalHydra.instance().clear()
    overrides = list(overrides or [])
    if config_name in ("evaluate", "convert"):  # as their command lines do
        overrides = plain_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.log_dir = str(tmp_path / "logs")
    return cfg


def run_entrypoint(
    script: str, *overrides: str, cwd: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``script`` (train.py, evaluate.py, convert.py) as users do; fail with its output.

    ``env`` entries are added to the environment; those set to None are removed from it.
    """
    full_env = {
        **os.environ,
        "HEPEXP_DATA_DIR": str(cwd / "data"),
        "HEPEXP_LOG_DIR": str(cwd / "logs"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def run_dirs(cwd: Path, task: str = "train") -> list[Path]:
    return sorted((cwd / "logs" / task / "runs").iterdir())
