"""Plots of track finding: efficiency vs pT and eta, edge-score distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from hepexp.plotting import plt, save_figure

_FLAGS = (("dm_matched", "double majority"), ("perfect_matched", "perfect"), ("lhc_matched", "LHC"))


def _binned_efficiency(
    values: np.ndarray, passed: np.ndarray, bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, efficiencies and binomial errors (NaN in empty bins)."""
    idx = np.digitize(values, bins) - 1
    ok = (idx >= 0) & (idx < len(bins) - 1)
    total = np.bincount(idx[ok], minlength=len(bins) - 1).astype(float)
    hit = np.bincount(idx[ok], weights=passed[ok].astype(float), minlength=len(bins) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = hit / total
        err = np.sqrt(eff * (1 - eff) / total)
    return 0.5 * (bins[1:] + bins[:-1]), eff, err


def plot_tracking(
    particles: pd.DataFrame,
    edge_scores: np.ndarray,
    out_dir: str | Path,
    score_cut: float = 0.5,
    pt_min_eta: float = 0.9,
) -> list[Path]:
    """Write ``efficiency_vs_pt.png``, ``efficiency_vs_eta.png`` (particles with pT >=
    ``pt_min_eta``) and ``edge_scores.png``.

    ``particles`` is :func:`hepexp.metrics.trackml.match_particles` output (reconstructable
    particles are used); ``edge_scores`` is (E, 2): score, is-true.
    """
    out_dir = Path(out_dir)
    sel = particles[particles["reconstructable"]]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.geomspace(0.1, max(20.0, float(sel["pt"].max()) if len(sel) else 20.0), 25)
    for flag, label in _FLAGS:
        x, eff, err = _binned_efficiency(sel["pt"].to_numpy(), sel[flag].to_numpy(), bins)
        ax.errorbar(x, eff, yerr=err, marker="o", ms=3, ls="", label=label)
    ax.set_xscale("log")
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if t <= bins[-1]]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("particle $p_T$ [GeV]")
    ax.set_ylabel("tracking efficiency")
    ax.set_ylim(0, 1.05)
    ax.axvline(0.9, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, out_dir / "efficiency_vs_pt.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    high = sel[sel["pt"] >= pt_min_eta]
    bins = np.linspace(-4, 4, 33)
    for flag, label in _FLAGS:
        x, eff, err = _binned_efficiency(high["eta"].to_numpy(), high[flag].to_numpy(), bins)
        ax.errorbar(x, eff, yerr=err, marker="o", ms=3, ls="", label=label)
    ax.set_xlabel(r"particle $\eta$")
    ax.set_ylabel(f"tracking efficiency ($p_T$ > {pt_min_eta:g} GeV)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, out_dir / "efficiency_vs_eta.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    true = edge_scores[:, 1] > 0
    ax.hist(edge_scores[true, 0], bins=bins, histtype="step", lw=1.5, label="same particle")
    ax.hist(edge_scores[~true, 0], bins=bins, histtype="step", lw=1.5, label="other")
    ax.axvline(score_cut, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("GNN edge score")
    ax.set_ylabel("edges")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "edge_scores.png"))
    return paths
