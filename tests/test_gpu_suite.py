"""benchmarks/gpu_suite.sh cannot rot between GPU runs: its CPU dry run (tiny sizes) completes
every step and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = (
    "pytest_gpu", "jet_ae_train", "ddp_all_gpus", "ddp_shared_gpu", "convert",
    "speed_regressor", "speed_gnn", "speed_om2vec", "speed_vqvae", "speed_jet_ae",
)  # fmt: skip


@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "WORK_DIR": str(tmp_path / "work"), "BUDGET_S": "900"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_suite.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "gpu_figures.json").read_text())
    failed = {s: r for s, r in figures["steps"].items() if r["rc"] != 0}
    logs = {s: (out / "logs" / f"{s}.log").read_text()[-2000:] for s in failed}
    assert set(figures["steps"]) == set(STEPS) and not failed, logs

    versions = figures["versions"]
    assert versions["packages"]["torch"] and versions["python"] and versions["gpus"] == []
    assert figures["pytest_gpu"]["failures"] == figures["pytest_gpu"]["errors"] == 0
    assert figures["pytest_gpu"]["skipped"] >= 7, "every model's CUDA test is collected"
    assert all(v is not None for v in figures["jet_ae_training"].values())
    # DDP: one rank through trainer=ddp_*, then two processes sharing one device
    assert [r["rank"] for r in figures["ddp"]["all_gpus"]] == [0]
    shared = sorted(figures["ddp"]["two_processes_one_gpu"], key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"]) for r in shared] == [(0, 2), (1, 2)]
    assert all(r["samples_per_s"] > 0 and r["timed_steps"] > 0 for r in shared)
    convert = figures["convert_regressor"]
    assert convert["events"] == 20 and convert["events_per_s"] > 0
    assert convert["slowest_stage"] in convert["seconds"]
    speed = figures["speed"]
    assert [r["variant"].split()[0] for r in speed["regressor"]["rows"]] == [
        "one-event", "padded", "packed",
    ]  # fmt: skip
    assert set(speed["gnn"]["variants"]) == {"fp32", "bf16", "fp32+ckpt", "bf16+ckpt"}
    assert any(r["variant"].startswith("reference") for r in speed["om2vec"]["rows"])
    assert speed["vqvae"]["results"] and speed["jet_ae"]["results"]

    table = (out / "gpu_figures.md").read_text()
    assert "FAILED" not in table and "| speed_gnn |" in table and "torch 2." in table
