"""The figures of ``benchmarks/gpu_suite.sh``: versions, then one JSON and one markdown table.

    python benchmarks/gpu_suite_report.py versions OUT/versions.json   # what produced the run
    python benchmarks/gpu_suite_report.py report OUT                   # OUT/gpu_figures.{json,md}

Every figure says which device, torch and CUDA produced it; a step that failed or ran out of
time shows as such instead of a number.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hepexp.utils.io import atomic_path, write_json

PACKAGES = (
    "torch", "pytorch-lightning", "lightning", "hydra-core", "omegaconf", "numpy", "pandas",
    "pyarrow", "scipy", "optuna", "hdbscan", "awkward", "uproot", "triton", "matplotlib",
)  # fmt: skip

#: published figures the suite is compared with (original papers / reference implementations)
PUBLISHED = {
    "jet_ae": {"pt_rel_std": 0.0019, "E_rel_std": 0.0027, "eta_rel_std_hepae": 0.013, "phi_rel_std_hepae": 0.024},
    "om2vec_reference_encode_oms_per_s": 28872,
    "gnn": {"train_s": 0.6, "infer_s": 0.24},
}  # fmt: skip


def versions() -> dict[str, Any]:
    """Python, packages, torch's CUDA/cuDNN, the GPUs and the driver, the commit."""
    import torch

    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": found,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "commit": _command(["git", "rev-parse", "--short", "HEAD"]),
    }
    return info


def _command(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pytest_counts(xml_path: Path) -> dict[str, int] | None:
    """Tests, failures, errors and skips of a JUnit XML report."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def collect(out: Path) -> dict[str, Any]:
    """Every figure of the run in ``out``, one dictionary."""
    steps = {p.stem: _load(p) for p in sorted((out / "steps").glob("*.json"))}
    figures: dict[str, Any] = {
        "versions": _load(out / "versions.json"),
        "steps": {k: v for k, v in steps.items() if not k.startswith(("throughput", "shared."))},
        "pytest_gpu": pytest_counts(out / "pytest_gpu.xml"),
        "ddp": {
            "all_gpus": [v for k, v in steps.items() if k.startswith("throughput.rank")],
            "two_processes_one_gpu": [v for k, v in steps.items() if k.startswith("shared.")],
        },
        "convert_regressor": _load(out / "convert.json"),
        "speed": {
            name: _load(out / f"speed_{name}.json")
            for name in ("regressor", "gnn", "om2vec", "vqvae", "jet_ae")
        },
        "published": PUBLISHED,
    }
    metrics = _load(out / "jet_ae_metrics.json") or {}
    keys = ("pt_rel_std", "E_rel_std", "eta_rel_std_hepae", "phi_rel_std_hepae", "eta_abs_rms",
            "phi_abs_rms", "pt_rel_sigma68", "E_rel_sigma68", "m_rel_std", "m_rel_sigma68")  # fmt: skip
    figures["jet_ae_training"] = {k: metrics.get(f"test/{k}") for k in keys} if metrics else None
    return figures


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _status(figures: dict, step: str) -> str:
    record = figures["steps"].get(step)
    if record is None:
        return "not run"
    if record["rc"] is None:
        return "skipped (time budget)"
    if record["rc"] == 0:
        return f"ok, {record['seconds']} s"
    reason = "timed out" if record["rc"] in (124, 137) else f"exit {record['rc']}"
    return f"FAILED ({reason}, see logs/{step}.log)"


def markdown(figures: dict) -> str:
    """A table of every figure, ready for docs/benchmarks.md."""
    v = figures["versions"] or {}
    packages = v.get("packages", {})
    gpus = ", ".join(v.get("gpus") or []) or "no GPU"
    lines = [
        f"GPU suite on {gpus} (driver {v.get('driver') or '-'}), torch "
        f"{packages.get('torch', '-')} (CUDA {v.get('torch_cuda') or '-'}), lightning "
        f"{packages.get('pytorch-lightning') or packages.get('lightning') or '-'}, Python "
        f"{v.get('python', '-')}, commit {v.get('commit') or '-'}; `bash benchmarks/gpu_suite.sh OUT`.",
        "",
        "| step | figure | value | status |",
        "|---|---|---|---|",
    ]

    def row(step: str, figure: str, value: str) -> None:
        lines.append(f"| {step} | {figure} | {value} | {_status(figures, step)} |")

    counts = figures["pytest_gpu"]
    row(
        "pytest_gpu",
        "CUDA tests passed / failed / skipped",
        f"{counts['passed']} / {counts['failures'] + counts['errors']} / {counts['skipped']}"
        if counts
        else "-",
    )
    jet = figures["jet_ae_training"] or {}
    published = PUBLISHED["jet_ae"]
    row(
        "jet_ae_train",
        "3 minutes of training, test std of the relative residual pT / E / eta / phi (published)",
        " / ".join(
            f"{_num(jet.get(k), '{:.2%}')} ({published[k]:.2%})"
            for k in ("pt_rel_std", "E_rel_std", "eta_rel_std_hepae", "phi_rel_std_hepae")
        ),
    )
    row(
        "jet_ae_train",
        "sigma68 pT / E (ours), absolute RMS eta / phi",
        f"{_num(jet.get('pt_rel_sigma68'), '{:.2%}')} / {_num(jet.get('E_rel_sigma68'), '{:.2%}')}, "
        f"{_num(jet.get('eta_abs_rms'), '{:.4f}')} / {_num(jet.get('phi_abs_rms'), '{:.4f}')}",
    )
    for step, key, label in (
        ("ddp_all_gpus", "all_gpus", "regressor_flash DDP, all GPUs: events/s per rank"),
        ("ddp_shared_gpu", "two_processes_one_gpu", "two DDP processes on GPU 0 (gloo): events/s per rank"),
    ):  # fmt: skip
        ranks = sorted(figures["ddp"][key], key=lambda r: r["rank"])
        value = ", ".join(f"rank {r['rank']}: {_num(r['samples_per_s'])}" for r in ranks)
        row(step, label, value or "-")
    conv = figures["convert_regressor"] or {}
    row(
        "convert",
        "regressor_flash convert.py, TML:10-50-like events/s (limiting stage)",
        f"{_num(conv.get('events_per_s'))} ({conv.get('slowest_stage', '-')})" if conv else "-",
    )
    speed = figures["speed"]
    for r in (speed.get("regressor") or {}).get("rows", []):
        row(
            "speed_regressor",
            f"regressor {r['variant']}: train / inference events/s (x one-event)",
            f"{_num(r['train_events_per_s'])} ({r['train_ratio']:.1f}x) / "
            f"{_num(r['infer_events_per_s'])} ({r['infer_ratio']:.1f}x)",
        )
    gnn = speed.get("gnn") or {}
    for name, r in (gnn.get("variants") or {}).items():
        target = " (target 0.6 / 0.24 s)" if gnn.get("targets") else ""
        row(
            "speed_gnn",
            f"interaction_gnn {name}, {gnn['nodes']:,} nodes / {gnn['edges']:,} edges: "
            f"train step / inference s{target}",
            f"{r['train_s']:.3f} / {r['infer_s']:.3f}",
        )
    for r in (speed.get("om2vec") or {}).get("rows", []):
        row(
            "speed_om2vec",
            f"om2vec {r['variant']}: train / encode OMs/s (x first row)",
            f"{_num(r['train_oms_per_s'], '{:,.0f}')} ({r['train_ratio']:.1f}x) / "
            f"{_num(r['encode_oms_per_s'], '{:,.0f}')} ({r['encode_ratio']:.1f}x)",
        )
    if speed.get("om2vec"):
        row(
            "speed_om2vec",
            "published reference Transformer VAE encoding, H100 bf16",
            f"{PUBLISHED['om2vec_reference_encode_oms_per_s']:,} OMs/s",
        )
    for r in (speed.get("vqvae") or {}).get("results", []):
        row(
            "speed_vqvae",
            f"vqvae {r['variant']}: train / tokenize tracks/s",
            f"{_num(r['train_tracks_per_s'], '{:,.0f}')} / {_num(r['tokenize_tracks_per_s'], '{:,.0f}')}",
        )
    for r in (speed.get("jet_ae") or {}).get("results", []):
        row(
            "speed_jet_ae",
            f"jet_ae batch {r['batch_size']}: train / inference jets/s",
            f"{_num(r['train_jets_per_s'], '{:,.0f}')} / {_num(r['infer_jets_per_s'], '{:,.0f}')}",
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions").add_argument("path", type=Path)
    sub.add_parser("report").add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "versions":
        info = versions()
        write_json(args.path, info)
        print(json.dumps(info, indent=1))
        return
    figures = collect(args.out)
    write_json(args.out / "gpu_figures.json", figures)
    table = markdown(figures)
    with atomic_path(args.out / "gpu_figures.md") as tmp:
        tmp.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
