"""Plots of TrackML tracking results: clustering scans, efficiencies, edge scores, residuals,
events."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd

from hepexp.plotting import plt, save_figure

PT_BINS = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.2, 1.6, 2.0, 3.0, 5.0, 10.0, 100.0])
ETA_BINS = np.linspace(-4.0, 4.0, 17)


def plot_scan_heatmap(scan: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Heatmap of the mean TrackML score over min_cluster_size x min_samples; best boxed."""
    table = scan.pivot(index="min_cluster_size", columns="min_samples", values="score")
    values = table.to_numpy()
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 2.5, 0.7 * values.shape[0] + 1.6))
    image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label="mean TrackML score")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel("min_samples")
    ax.set_ylabel("min_cluster_size")
    finite = np.where(np.isfinite(values), values, -np.inf)
    best = np.unravel_index(int(np.argmax(finite)), values.shape)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="black" if (i, j) == best else "white")  # fmt: skip
    ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_title(title or "HDBSCAN parameter scan (validation events)")
    return save_figure(fig, path)


def binned_efficiency(
    values: np.ndarray, matched: np.ndarray, bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Efficiency, binomial error and particle count per bin of ``values`` (NaN where empty)."""
    idx = np.digitize(values, bins) - 1
    ok = (idx >= 0) & (idx < len(bins) - 1)
    n = np.bincount(idx[ok], minlength=len(bins) - 1).astype(float)
    k = np.bincount(idx[ok], weights=matched[ok].astype(float), minlength=len(bins) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = k / n
        err = np.sqrt(eff * (1 - eff) / n)
    return eff, err, n


_DEFINITIONS = (
    ("dm_matched", "double majority"),
    ("perfect_matched", "perfect"),
    ("lhc_matched", "LHC"),
)


def plot_efficiencies(particles: pd.DataFrame, path: str | Path, pt_min: float = 0.9) -> Path:
    """Double-majority, perfect and LHC efficiency vs pT and vs eta (pT >= ``pt_min``).

    ``particles`` is the concatenation of :func:`hepexp.metrics.trackml.match_particles`
    tables; only reconstructable particles count.
    """
    table = particles[particles["reconstructable"]]
    high = table[table["pt"].to_numpy() >= pt_min]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    pt_centres = np.sqrt(PT_BINS[:-1] * PT_BINS[1:])
    eta_centres = 0.5 * (ETA_BINS[:-1] + ETA_BINS[1:])
    for column, label in _DEFINITIONS:
        eff, err, _ = binned_efficiency(table["pt"].to_numpy(), table[column].to_numpy(), PT_BINS)
        axes[0].errorbar(pt_centres, eff, yerr=err, marker="o", ms=4, capsize=2, label=label)
        eff, err, _ = binned_efficiency(high["eta"].to_numpy(), high[column].to_numpy(), ETA_BINS)
        axes[1].errorbar(eta_centres, eff, yerr=err, marker="o", ms=4, capsize=2, label=label)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].axvline(pt_min, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("particle $p_T$ [GeV]")
    axes[1].set_xlabel(rf"particle $\eta$ ($p_T \geq$ {pt_min:g} GeV)")
    for ax in axes:
        ax.set_ylabel("efficiency")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower center", fontsize=8)
    fig.suptitle(f"Tracking efficiency ({len(table)} reconstructable particles)")
    return save_figure(fig, path)


def plot_edge_scores(edge_scores: np.ndarray, path: str | Path, score_cut: float = 0.5) -> Path:
    """Histograms of edge scores ((E, 2): score, is-true) for true and false edges."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    true = edge_scores[:, 1] > 0
    ax.hist(edge_scores[true, 0], bins=bins, histtype="step", lw=1.5, label="same particle")
    ax.hist(edge_scores[~true, 0], bins=bins, histtype="step", lw=1.5, label="other")
    ax.axvline(score_cut, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("edge score")
    ax.set_ylabel("edges")
    ax.legend()
    return save_figure(fig, path)


def plot_residuals(
    residuals: Mapping[str, np.ndarray], sigmas: Mapping[str, float], path: str | Path
) -> Path:
    """Histogram of predicted - true for every regressed parameter."""
    names = list(residuals)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.3))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        r = residuals[name]
        lo, hi = np.quantile(r, [0.002, 0.998]) if r.size else (-1.0, 1.0)
        ax.hist(r, bins=np.linspace(lo, hi, 100), histtype="stepfilled", alpha=0.75)
        ax.set_yscale("log")
        ax.set_xlabel(f"{name}: predicted - true")
        ax.set_title(f"$\\sigma$ = {sigmas[name]:.4f}", fontsize=10)
    np.atleast_1d(axes)[0].set_ylabel("hits")
    fig.suptitle("Per-hit residuals (hits of particles)")
    return save_figure(fig, path)


def _colours(labels: np.ndarray) -> np.ndarray:
    """A colour per label (cycled, shuffled so neighbouring ids differ); grey for -1 / 0."""
    cmap = plt.get_cmap("tab20")
    _, code = np.unique(labels, return_inverse=True)
    shuffled = np.random.default_rng(0).permutation(max(code.max() + 1, 1) if code.size else 1)
    colours = cmap((shuffled[code] % 20) / 19.0) if code.size else np.zeros((0, 4))
    colours[labels < 0] = (0.6, 0.6, 0.6, 1.0)
    return colours


def plot_event_display(
    xyz: np.ndarray,
    labels: np.ndarray,
    particle_id: np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """Hits in x-y and r-z, coloured by reconstructed track (top) and by true particle
    (bottom); hits in no track (label -1) and noise are grey."""
    xyz = np.asarray(xyz, dtype=float)
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    truth = np.where(np.asarray(particle_id) == 0, -1, np.asarray(particle_id))
    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    for row, (lab, name) in enumerate(
        ((labels, "reconstructed tracks"), (truth, "true particles"))
    ):
        colours = _colours(np.asarray(lab))
        n = len(np.unique(lab[lab >= 0]))
        axes[row, 0].scatter(xyz[:, 0], xyz[:, 1], c=colours, s=6)
        axes[row, 0].set_xlabel("x [mm]")
        axes[row, 0].set_ylabel("y [mm]")
        axes[row, 0].set_aspect("equal")
        axes[row, 0].set_title(f"{name} ({n}), x-y")
        axes[row, 1].scatter(xyz[:, 2], r, c=colours, s=6)
        axes[row, 1].set_xlabel("z [mm]")
        axes[row, 1].set_ylabel("r [mm]")
        axes[row, 1].set_title(f"{name}, r-z")
    fig.suptitle(title or "Event display")
    return save_figure(fig, path)
