"""Plots of hit tokenizers; also a command line that overlays the error CDFs of several runs.

    python -m hepexp.plotting.vqvae RUN_EVAL_DIR [RUN_EVAL_DIR ...] --out cdf.png [--labels ...]

Each directory is an evaluation output (``error_cdf.csv`` written by ``evaluate.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.errors import DataError
from hepexp.metrics.stats import efficiency_errors
from hepexp.plotting import add_headroom, experiment_label, hep_style, log_scale, plt, save_figure

#: published shares within 25 mm of the original tokenizers (VQ-VAE track tokenization study)
PUBLISHED_WITHIN_25MM = {"conditional (original)": 0.782, "unconditional (original)": 0.440}


@hep_style
def plot_error_cdfs(
    curves: Mapping[str, pd.DataFrame], path: str | Path, threshold: float = 25.0
) -> Path:
    """Overlay error CDFs (frames with ``error_mm`` and ``cdf``) with the published points."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, curve in curves.items():
        ax.plot(curve["error_mm"], curve["cdf"], label=label, lw=1.6)
    for i, (label, value) in enumerate(PUBLISHED_WITHIN_25MM.items()):
        ax.plot([threshold], [value], marker="*x"[i], ms=9, ls="none", color="k", label=label)
    ax.axvline(threshold, color="grey", lw=0.6, ls=":")
    ax.set_xlim(0, 150)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("3D reconstruction error [mm]")
    ax.set_ylabel("share of hits with smaller error")
    ax.legend(loc="lower right")
    experiment_label(ax)
    return save_figure(fig, path)


@hep_style
def plot_token_frequency(counts: np.ndarray, path: str | Path) -> Path:
    """Code frequencies sorted from most to least used (log scale), with utilisation."""
    counts = np.asarray(counts, np.float64)
    total = max(counts.sum(), 1.0)
    ranked = np.sort(counts)[::-1] / total
    used = int((counts > 0).sum())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(np.arange(1, len(ranked) + 1), np.where(ranked > 0, ranked, np.nan))
    axes[0].axhline(1.0 / len(counts), color="grey", ls=":", label="uniform")
    log_scale(axes[0], "y", plain_numbers=False)
    add_headroom(axes[0])
    axes[0].set_xlabel("code rank")
    axes[0].set_ylabel("token frequency")
    axes[0].legend(loc="upper right", title=f"{used}/{len(counts)} codes used")
    axes[1].hist(counts, bins=min(100, int(counts.max()) + 1), histtype="stepfilled", alpha=0.7)
    log_scale(axes[1], "y", plain_numbers=False)
    axes[1].set_xlabel("hits per code")
    axes[1].set_ylabel("codes / bin")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)


@hep_style
def plot_error_vs_radius(table: pd.DataFrame, path: str | Path) -> Path:
    """Mean/median error and share within 25 mm per transverse-radius bin (with Clopper-Pearson
    68% intervals when the table has ``n_hits``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    r = table["r_mean_mm"]
    axes[0].plot(r, table["mean_error_mm"], marker="o", label="mean")
    axes[0].plot(r, table["median_error_mm"], marker="s", label="median")
    axes[0].set_xlabel("transverse radius r [mm]")
    axes[0].set_ylabel("3D error [mm]")
    axes[0].set_ylim(bottom=0)
    add_headroom(axes[0])
    axes[0].legend(loc="upper right")
    share, err = table["within_25mm"].to_numpy(), None
    if "n_hits" in table:
        n = table["n_hits"].to_numpy()
        share, err = efficiency_errors(np.round(share * n), n)
    axes[1].errorbar(r, share, yerr=err, fmt="o-")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_xlabel("transverse radius r [mm]")
    axes[1].set_ylabel("share within 25 mm")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)


@hep_style
def plot_examples(true: Sequence[np.ndarray], reco: Sequence[np.ndarray], path: str | Path) -> Path:
    """A few tracks (true vs reconstructed hits) in the x-y and r-z planes, in mm."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for i, (t, p) in enumerate(zip(true, reco, strict=True)):
        color = f"C{i % 10}"
        axes[0].plot(t[:, 0], t[:, 1], "o-", color=color, ms=3, lw=0.8)
        axes[0].plot(p[:, 0], p[:, 1], "x", color=color, ms=5)
        axes[1].plot(t[:, 2], np.hypot(t[:, 0], t[:, 1]), "o-", color=color, ms=3, lw=0.8)
        axes[1].plot(p[:, 2], np.hypot(p[:, 0], p[:, 1]), "x", color=color, ms=5)
    axes[0].set_xlabel("x [mm]")
    axes[0].set_ylabel("y [mm]")
    axes[0].set_aspect("equal", adjustable="datalim")
    axes[1].set_xlabel("z [mm]")
    axes[1].set_ylabel("r [mm]")
    axes[1].plot([], [], "o-", color="grey", ms=3, lw=0.8, label="true hits")
    axes[1].plot([], [], "x", color="grey", ms=5, label="decoded from tokens")
    axes[1].legend(loc="best")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)


def read_cdf(directory: str | Path) -> pd.DataFrame:
    """``error_cdf.csv`` of an evaluation directory (or the file itself)."""
    path = Path(directory)
    if path.is_dir():
        path = path / "error_cdf.csv"
    if not path.exists():
        raise DataError(path, None, "no error CDF here; run evaluate.py for this model first")
    frame = pd.read_csv(path)
    for column in ("error_mm", "cdf"):
        if column not in frame.columns:
            raise DataError(path, column, "missing column of an error CDF (error_mm, cdf)")
    return frame


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Overlay the error CDFs of tokenizer runs.")
    parser.add_argument("runs", nargs="+", help="evaluation directories (with error_cdf.csv)")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: dir names)")
    parser.add_argument("--out", required=True, help="PNG to write (and a PDF beside it)")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(labels)} labels")
    curves = {label: read_cdf(run) for label, run in zip(labels, args.runs, strict=True)}
    print(plot_error_cdfs(curves, args.out))


if __name__ == "__main__":
    main()
