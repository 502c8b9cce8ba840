"""Optuna sweeps: search-space syntax, shared studies, configs, and sweeps run as users run them."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hepexp.checkpoint import build_model
from hepexp.errors import ConfigError
from hepexp.sweep.space import parse_search_space
from hepexp.sweep.study import (
    WORKER_ATTR,
    claim_trial,
    make_storage,
    open_study,
    trial_id,
)

from .conftest import (
    CONF_DIR,
    ROOT,
    TINY_DATA,
    compose_config,
    require,
    require_module,
    run_entrypoint,
)
from .wandb_helpers import wandb_run

SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
# one torch thread: tiny models, and sweeps of several processes share the cores
QUICK = [
    "trainer.accelerator=cpu",
    "num_threads=1",
    "callbacks.model_summary=null",
    *TINY_DATA["atlas_jets"],
]


# -- search space ------------------------------------------------------------------------------
def test_search_space_from_hydra_sweep_syntax() -> None:
    space, fixed = parse_search_space(
        [
            "model.optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "model.latent_dim=tag(int, interval(2, 8))",
            "model.dropout_in=interval(0, 1)",
            "model.width=tag(log, int, interval(16, 512.0))",
            "data.batch_size=range(64, 513, 64)",
            "model.dropout=range(0.0, 0.3, 0.1)",
            "model.hidden=choice([200,100,50], [100,50,25])",
            "model.activation=tanh,elu",
            "trainer.max_epochs=3",
            "model.activation=choice(relu, silu)",  # later wins: the command line over params
        ]
    )
    assert fixed == ["trainer.max_epochs=3"]
    assert space["model.optimizer.lr"].distribution == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["model.latent_dim"].distribution == IntDistribution(2, 8)
    assert space["model.dropout_in"].distribution == FloatDistribution(0.0, 1.0)
    assert space["model.width"].distribution == IntDistribution(16, 512, log=True)
    # Hydra's range excludes its stop, Optuna's high is inclusive
    assert space["data.batch_size"].distribution == IntDistribution(64, 512, step=64)
    assert space["data.batch_size"].grid() == [64, 128, 192, 256, 320, 384, 448, 512]
    dropout = space["model.dropout"].distribution
    assert (dropout.low, dropout.high, dropout.step) == (0.0, pytest.approx(0.2), 0.1)
    assert space["model.hidden"].distribution == CategoricalDistribution(
        ["[200,100,50]", "[100,50,25]"]
    )
    assert space["model.activation"].distribution == CategoricalDistribution(["relu", "silu"])
    with pytest.raises(ConfigError, match="grid sampler"):
        space["model.optimizer.lr"].grid()


def test_sampled_values_reach_the_job_as_written() -> None:
    """Every sampled value, written back as an override, parses to the same value."""
    space, _ = parse_search_space(
        [
            "a=tag(log, interval(1e-5, 1e-1))",
            "b=tag(int, interval(1, 9))",
            "c=choice([1,2], [3], 'x y', 0.5, true)",
            "d=range(0.0, 1.0, 0.25)",
        ]
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    parser = OverridesParser.create()
    as_written = {"[1,2]": [1, 2], "[3]": [3]}
    for _ in range(30):
        trial = study.ask({k: p.distribution for k, p in space.items()})
        for key, value in trial.params.items():
            parsed = parser.parse_override(space[key].override(value)).value()
            assert parsed == as_written.get(value, value), (key, value)
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("x=interval(3, 1)", "low < high"),
        ("x=tag(sqrt, interval(1, 3))", "unknown tags"),
        ("x=range(5, 5)", "empty"),
        ("x=choice(1, 1)", "repeated"),
    ],
)
def test_bad_search_space_names_the_key(argument: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search_space([argument])


# -- studies shared by processes ---------------------------------------------------------------
def _claim_until_full(url: str, n_trials: int, start: float) -> list[int]:
    storage = make_storage(url)
    study, _ = open_study("shared", storage, "minimize", optuna.samplers.RandomSampler())
    space = {"x": FloatDistribution(0.0, 1.0)}
    time.sleep(max(0.0, start - time.time()))  # all processes race from the same moment
    numbers = []
    while (trial := claim_trial(study, storage, n_trials, space, str(os.getpid()))) is not None:
        study.tell(trial, trial.params["x"])
        numbers.append(trial.number)
    return numbers


def test_processes_sharing_a_study_claim_exactly_n_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study("shared", make_storage(url), "minimize")
    ctx = multiprocessing.get_context("fork")
    start = time.time() + 1.0
    with ctx.Pool(3) as pool:
        claimed = pool.starmap(_claim_until_full, [(url, 24, start)] * 3)
    numbers = sorted(n for per_process in claimed for n in per_process)
    assert numbers == list(range(24)), "each trial claimed once, none beyond n_trials"
    assert all(claimed), "every process got work"
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 24
    assert len({t.user_attrs[WORKER_ATTR] for t in study.trials}) == 3


def test_trials_of_a_dead_sweep_are_failed_by_heartbeat(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1)
    study, created = open_study("s", storage, "minimize")
    assert created
    space = {"x": FloatDistribution(0.0, 1.0)}
    orphan = claim_trial(study, storage, 3, space, "killed-process")  # never told, no heartbeat
    time.sleep(3.5)  # > grace period (2 heartbeat intervals) + SQLite's 1 s clock resolution
    resumed, created = open_study("s", storage, "minimize")
    assert not created
    trial = claim_trial(resumed, storage, 3, space, "new-process")
    assert storage.get_trial(trial_id(orphan)).state == TrialState.FAIL
    assert trial.number == 1


def test_attaching_with_the_other_direction_fails(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    open_study("s", storage, "minimize")
    with pytest.raises(ConfigError, match="optimises"):
        open_study("s", storage, "maximize")


# -- configs -----------------------------------------------------------------------------------
def test_every_model_has_a_search() -> None:
    """hparams_search/<model>_optuna.yaml exists for every model config (presets that only
    modify another model config, like jet_ae_seed, share its search)."""
    folder = CONF_DIR / "model"
    models = {p.stem for p in folder.glob("*.yaml") if not _is_preset(folder, p.stem)}
    missing = models - {s.removesuffix("_optuna") for s in SEARCHES}
    assert not missing, f"add hepexp/conf/hparams_search/<model>_optuna.yaml for {sorted(missing)}"


def _is_preset(folder: Path, name: str) -> bool:
    """A model config that only changes another one (``defaults: [jet_ae]``)."""
    defaults = OmegaConf.load(folder / f"{name}.yaml").get("defaults", [])
    return any(isinstance(d, str) and (folder / f"{d}.yaml").exists() for d in defaults)


@pytest.mark.parametrize("search", SEARCHES)
def test_search_space_keys_exist_and_samples_build(tmp_path: Path, search: str) -> None:
    cfg = compose_config(tmp_path, [f"hparams_search={search}"])
    sweeper = cfg.hydra.sweeper
    assert get_class(sweeper._target_).__name__ == "OptunaSweeper"
    space, _ = parse_search_space(f"{k}={v}" for k, v in sweeper.params.items())
    assert space, "a search with nothing to search"
    for key in space:
        assert OmegaConf.select(cfg, key.lstrip("+"), default="<absent>") != "<absent>", key
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    model = cfg.hydra.runtime.choices["model"]
    data = cfg.hydra.runtime.choices["data"]
    for _ in range(2):  # sampled configs compose and build
        trial = study.ask({k: p.distribution for k, p in space.items()})
        overrides = [space[k].override(v) for k, v in trial.params.items()]
        sampled = compose_config(
            tmp_path, [f"hparams_search={search}", f"model={model}", f"data={data}", *overrides]
        )
        assert sum(p.numel() for p in build_model(sampled.model).parameters()) > 0
        study.tell(trial, 0.0)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes"])
def test_sampler_configs(tmp_path: Path, sampler: str) -> None:
    cfg = compose_config(
        tmp_path, ["hparams_search=jet_ae_optuna", f"hydra/sweeper/sampler={sampler}"]
    )
    node = cfg.hydra.sweeper.sampler
    kwargs = {"search_space": {"x": [1, 2]}} if sampler == "grid" else {}
    obj = instantiate(node, **kwargs)
    assert isinstance(obj, optuna.samplers.BaseSampler)


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [("none", "NopPruner"), ("median", "MedianPruner"), ("hyperband", "HyperbandPruner")],
)
def test_pruner_configs(tmp_path: Path, pruner: str, cls: str) -> None:
    cfg = compose_config(
        tmp_path,
        ["hparams_search=jet_ae_optuna", f"hydra/sweeper/pruner={pruner}", "trainer.max_epochs=27"],
    )
    obj = instantiate(cfg.hydra.sweeper.pruner)
    assert type(obj).__name__ == cls
    if pruner == "hyperband":
        assert cfg.hydra.sweeper.pruner.max_resource == 27, "epochs are the resource"


def test_direction_follows_optimized_mode(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["hparams_search=jet_ae_optuna", "optimized_mode=max"])
    assert cfg.hydra.sweeper.direction == "max"


# -- sweeps as users run them ------------------------------------------------------------------
def _study(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


@pytest.mark.slow
def test_sweep_runs_trials_logs_them_and_reports_the_best(tmp_path: Path) -> None:
    run_entrypoint(
        "train.py",
        "-m",
        "hparams_search=jet_ae_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/sampler=random",
        "trainer.max_epochs=2",
        "logger=wandb",
        *QUICK,
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "sweep", "WANDB_MODE": "offline"},
    )
    sweep = tmp_path / "logs/train/multiruns/sweep"
    study = _study(sweep, "jet_ae")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        job = sweep / str(trial.number)
        # the job trained with its trial's parameters and returned its best validation loss
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert config["model"]["optimizer"]["lr"] == pytest.approx(
            trial.params["model.optimizer.lr"]
        )
        assert config["model"]["activation"] == trial.params["model.activation"]
        assert config["data"]["batch_size"] == trial.params["data.batch_size"]
        metrics = json.loads((job / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["best/val/loss"])
        # the pruning callback reported every validation epoch
        csv = pd.read_csv(job / "csv/metrics.csv")
        epochs = csv.dropna(subset=["val/loss"])
        assert trial.intermediate_values == pytest.approx(
            dict(zip(epochs["epoch"], epochs["val/loss"], strict=True))
        )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(study.trials, key=lambda t: t.value)
    assert results["best_trial"] == best.number
    assert results["best_value"] == pytest.approx(best.value)
    assert results["best_params"] == best.params
    assert results["states"] == {"complete": 3}

    # W&B: one offline run per trial, grouped by the study, and a summary with the best trial
    trial_runs = {}
    for number in range(3):
        runs = list((sweep / str(number) / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"trial {number} has one W&B run"
        trial_runs[number] = wandb_run(runs[0])
    for number, run in trial_runs.items():
        assert run["group"] == "jet_ae"
        assert run["name"] == f"jet_ae-trial-{number}"
        assert run["config"]["optuna"]["trial"] == number
        assert run["summary"]["best/val/loss"] == pytest.approx(study.trials[number].value)
    summary_runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(summary_runs) == 1
    summary = wandb_run(summary_runs[0])
    assert (summary["group"], summary["job_type"]) == ("jet_ae", "optuna-study")
    assert summary["summary"]["best_trial"] == best.number
    assert summary["summary"]["best_value"] == pytest.approx(best.value)
    assert summary["summary"]["best_params"] == best.params


@pytest.mark.slow
def test_failed_and_nan_trials_are_tolerated_up_to_max_failure_rate(tmp_path: Path) -> None:
    """Grid of 4: one good trial, one whose loss diverges (SGD with a huge step), two that raise
    (unknown activation). max_failure_rate=0.75 tolerates 3 failures of 4: the sweep goes on
    past them. With max_failure_rate=0 the first failure stops the sweep."""
    sweep_args = [
        "-m",
        "hparams_search=jet_ae_optuna",
        "~hydra.sweeper.params",
        "model.optimizer._target_=torch.optim.SGD",
        "trainer.max_epochs=2",
        *QUICK,
    ]
    run_entrypoint(
        "train.py",
        *sweep_args,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.max_failure_rate=0.75",
        "model.optimizer.lr=choice(0.05, 1e30)",
        "model.activation=choice(tanh, nonexistent)",
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "tolerant"},
    )
    trials = {
        (t.params["model.optimizer.lr"], t.params["model.activation"]): t
        for t in _study(tmp_path / "logs/train/multiruns/tolerant", "jet_ae").trials
    }
    assert len(trials) == 4, "the sweep went on after failures"
    good = trials[(0.05, "tanh")]
    assert good.state == TrialState.COMPLETE and math.isfinite(good.value)
    diverged = trials[(1e30, "tanh")]
    assert diverged.state == TrialState.FAIL
    assert re.fullmatch(r"objective returned (nan|inf)", diverged.user_attrs["hepexp:fail_reason"])
    for lr in (0.05, 1e30):
        raised = trials[(lr, "nonexistent")]
        assert raised.state == TrialState.FAIL
        assert "unknown activation" in raised.user_attrs["hepexp:fail_reason"]

    with pytest.raises(AssertionError, match="max_failure_rate=0.0") as failure:
        run_entrypoint(
            "train.py",
            *sweep_args,
            "hydra.sweeper.max_failure_rate=0",
            "hydra.sweeper.n_trials=3",
            "model.activation=choice(nonexistent, bogus)",
            cwd=tmp_path,
            env={"HEPEXP_RUN_ID": "strict"},
        )
    assert "unknown activation" in str(failure.value), "the failure's cause is logged"
    strict = _study(tmp_path / "logs/train/multiruns/strict", "jet_ae").trials
    assert [t.state for t in strict] == [TrialState.FAIL], "stopped at the first failure"


@pytest.mark.slow
def test_resumed_study_with_median_pruning(tmp_path: Path) -> None:
    """A study that already holds one excellent trial is resumed; the median pruner then stops
    every new trial after its first validation, and the sweep runs on to n_trials."""
    sweep = tmp_path / "logs/train/multiruns/sweep"
    storage = make_storage(f"sqlite:///{sweep / 'optuna.db'}")
    study, _ = open_study("jet_ae", storage, "minimize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.optimizer.lr": 1e-3},
            distributions={"model.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)},
            value=1e-6,
            intermediate_values={0: 1e-6, 1: 1e-6, 2: 1e-6},
        )
    )
    run_entrypoint(
        "train.py",
        "-m",
        "hparams_search=jet_ae_optuna",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=3",
        *QUICK,
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "sweep"},
    )
    trials = _study(sweep, "jet_ae").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 2
    for trial in trials[1:]:
        job = sweep / str(trial.number)
        epochs = pd.read_csv(job / "csv/metrics.csv").dropna(subset=["val/loss"])
        assert list(epochs["epoch"]) == [0], "stopped after the first of 3 epochs"
        assert trial.intermediate_values == {0: pytest.approx(epochs["val/loss"].iloc[0])}
        assert not (job / "metrics.json").exists(), "a pruned trial reports no final metrics"


# -- a study shared by sweep processes through PostgreSQL --------------------------------------
def _postgres_bin() -> Path | None:
    for version in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (version / "initdb").exists() and (version / "pg_ctl").exists():
            return version
    return None


@pytest.fixture
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway PostgreSQL server on a unix socket; yields its SQLAlchemy URL."""
    require_module("psycopg2", "the PostgreSQL driver (hepexp[postgres]) is absent")
    bin_dir = _postgres_bin()
    require(bin_dir is not None, "no PostgreSQL server binaries (apt-get install postgresql)")
    import pwd
    import shutil
    import tempfile

    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require(False, "running as root and there is no 'postgres' user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="hepexp-pg-"))
    if as_user:
        shutil.chown(home, "postgres")
    data, log = home / "data", home / "server.log"
    port = "54329"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        run(
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-c listen_addresses='' -k {home} -p {port} -c fsync=off",
        )  # fmt: skip
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        said = (getattr(err, "stderr", None) or b"").decode(errors="replace")
        if log.exists():
            said += log.read_text(errors="replace")
        shutil.rmtree(home, ignore_errors=True)
        require(False, f"cannot start a PostgreSQL server here: {err}\n{said.strip()[-2000:]}")
    try:
        run(str(bin_dir / "createdb"), "-h", str(home), "-p", port, "-U", "postgres", "optuna")
        yield f"postgresql+psycopg2://postgres@/optuna?host={home}&port={port}"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_sweep_processes_share_one_postgres_study(tmp_path: Path, postgres: str) -> None:
    """Two sweeps, as on two machines (own working dirs, data caches and logs), attach to one
    study in PostgreSQL and together run n_trials trials, each exactly once."""
    n_trials = 5
    procs = []
    for machine in ("a", "b"):
        cwd = tmp_path / machine
        cwd.mkdir()
        env = {
            **os.environ,
            "HEPEXP_DATA_DIR": str(cwd / "data"),
            "HEPEXP_LOG_DIR": str(cwd / "logs"),
            "HEPEXP_RUN_ID": "sweep",
        }
        args = [
            "-m",
            "hparams_search=jet_ae_optuna",
            f"hydra.sweeper.storage='{postgres}'",
            "hydra.sweeper.study_name=shared",
            f"hydra.sweeper.n_trials={n_trials}",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=7",  # the same seed on both: joiners reseed
            "trainer.max_epochs=1",
            *QUICK,
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "train.py"), *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-6000:]

    study = optuna.load_study(study_name="shared", storage=postgres)
    assert [t.number for t in study.trials] == list(range(n_trials))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs[WORKER_ATTR] for t in study.trials}
    assert len(workers) == 2, "both processes ran trials"
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == n_trials, "no parameter set was run twice"
    # each trial ran once, on the machine that claimed it, in a directory named after it
    ran = sorted(
        int(job.name)
        for machine in ("a", "b")
        for job in (tmp_path / machine / "logs/train/multiruns/sweep").iterdir()
        if job.name.isdigit() and (job / "metrics.json").exists()
    )
    assert ran == list(range(n_trials))
    for machine in ("a", "b"):
        assert not (tmp_path / machine / "logs/train/multiruns/sweep/optuna.db").exists()
