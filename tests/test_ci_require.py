"""require(): what a clone may lack is a skip, under CI (CI=true) a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, require, require_module


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    require(True, "present")  # nothing happens
    with pytest.raises(pytest.skip.Exception, match="data is absent"):
        require(False, "data is absent")
    with pytest.raises(pytest.skip.Exception, match="no_such_module"):
        require_module("no_such_module", "an optional extra")


def test_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require(True, "present")
    with pytest.raises(pytest.fail.Exception, match="data is absent.*CI=true"):
        require(False, "data is absent")
    with pytest.raises(pytest.fail.Exception, match="an optional extra.*no_such_module"):
        require_module("no_such_module", "an optional extra")
    assert require_module("json", "always there").__name__ == "json"


@pytest.mark.slow
def test_a_ci_run_without_shared_data_fails_and_says_why(tmp_path: Path) -> None:
    """The real outcome in a pytest run: failed (not skipped) tests naming the missing file, and
    the summary line saying where the shared data was looked for."""
    env = {**os.environ, "CI": "true", "HEPEXP_SHARED": str(tmp_path / "nowhere")}
    tests = [
        "tests/test_jets_data.py::test_real_root_file_cartesian_branches",
        "tests/test_trackml_io.py::test_builtin_geometry_matches_real_detectors_file",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 failed" in out and "skipped" not in out, out
    assert "uproot-HZZ.root is absent" in out and "detectors.csv.gz absent" in out
    assert f"shared data ({(tmp_path / 'nowhere' / 'data').resolve()}): ABSENT" in out
