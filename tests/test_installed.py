"""The framework installed from its wheel, used from an empty directory outside the repository:
console commands, packaged configs, a user's own config directory."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, TINY_DATA

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
JETS = ["model=jet_ae", "data=atlas_jets", *TINY_DATA["atlas_jets"], "trainer.accelerator=cpu"]


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A fresh venv holding the hepexp wheel; its dependencies come from this interpreter's
    site-packages through a .pth path line (which does not run the editable install's hook)."""
    tmp = tmp_path_factory.mktemp("installed")
    source, wheels = tmp / "source", tmp / "wheels"  # built from a copy: the clone stays clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "hepexp", "hydra_plugins"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": IGNORED} if copy is shutil.copytree else {}))
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        cwd=tmp, env=dict(os.environ), timeout=600,
    )  # fmt: skip
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=dict(os.environ))
    # as a user would: nothing points at the repository, runs and data go under the cwd
    unset = ("PYTHONPATH", "PYTHONHOME", "HEPEXP_LOG_DIR", "HEPEXP_DATA_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    purelib = _run(
        [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp, env=env,
    ).strip()  # fmt: skip
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (wheel,) = wheels.glob("hepexp-*.whl")
    _run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
         "--no-deps", "--no-index", str(wheel)],
        cwd=tmp, env=env, timeout=600,
    )  # fmt: skip
    return venv, env


@pytest.mark.slow
def test_installed_commands_train_and_evaluate_from_an_empty_directory(installed, tmp_path):
    venv, env = installed
    work = tmp_path / "project"
    work.mkdir()
    probe = (
        "import hepexp, hydra_plugins.hepexp_optuna_sweeper as sweeper;"
        "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
        "print(hepexp.__file__); print(sweeper.__file__);"
        "print([s.__name__ for s in Plugins.instance().discover(Sweeper)])"
    )
    out = _run([str(venv / "bin/python"), "-c", probe], work, env).splitlines()
    package, plugin, sweepers = out[:3]
    assert Path(package).is_relative_to(venv), "the wheel's hepexp, not the repository's"
    assert Path(plugin).is_relative_to(venv) and "OptunaSweeper" in sweepers, "our sweeper ships"

    _run(["hepexp-train", "debug=fdr", *JETS], work, env)
    assert sorted(p.name for p in work.iterdir()) == ["data", "logs"]

    # a user's own config directory joins ours: a new experiment on top of our groups
    user = work / "my_conf" / "experiment"
    user.mkdir(parents=True)
    (user / "my_run.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: jet_ae\n  - override /data: atlas_jets\n"
        "tags: [mine]\ntrainer:\n  max_epochs: 1\nmodel:\n  latent_dim: 5\n"
    )
    env_run = {**env, "HEPEXP_RUN_ID": "mine"}
    _run(["hepexp-train", "--config-dir", "my_conf", "experiment=my_run", *JETS[2:]], work, env_run)
    run = work / "logs/train/runs/mine"
    config = (run / "config.yaml").read_text()
    assert "latent_dim: 5" in config and "- mine" in config
    ckpt = run / "checkpoints/last.ckpt"

    _run(["hepexp-evaluate", f"ckpt_path={ckpt}", "data.batch_size=128"], work,
         {**env, "HEPEXP_RUN_ID": "ev"})  # fmt: skip
    metrics = json.loads((work / "logs/evaluate/runs/ev/metrics.json").read_text())
    assert metrics["n_jets"] == 600 and metrics["pt_rel_std"] > 0
    assert (work / "logs/evaluate/runs/ev/residuals.pdf").exists()
