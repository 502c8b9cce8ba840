"""Plots of TrackML tracking results: clustering scans, efficiencies, edge scores, residuals,
events."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.metrics.stats import efficiency_errors
from hepexp.plotting import (
    add_headroom,
    experiment_label,
    hep_style,
    log_scale,
    plt,
    save_figure,
)

PT_BINS = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.2, 1.6, 2.0, 3.0, 5.0, 10.0, 100.0])
ETA_BINS = np.linspace(-4.0, 4.0, 17)


@hep_style
def plot_scan_heatmap(scan: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Heatmap of the mean TrackML score over min_cluster_size x min_samples; best boxed."""
    table = scan.pivot(index="min_cluster_size", columns="min_samples", values="score")
    values = table.to_numpy()
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 2.5, 0.7 * values.shape[0] + 1.6))
    image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label="mean TrackML score")
    ax.minorticks_off()
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
    experiment_label(ax)
    ax.set_title(title or "HDBSCAN scan on validation events", loc="left", pad=24)
    return save_figure(fig, path)


def binned_efficiency(
    values: np.ndarray, matched: np.ndarray, bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Efficiency per bin of ``values``, its Clopper-Pearson 68% errors (shape (2, bins):
    below, above) and the particle count per bin; NaN where a bin is empty."""
    idx = np.digitize(values, bins) - 1
    ok = (idx >= 0) & (idx < len(bins) - 1)
    n = np.bincount(idx[ok], minlength=len(bins) - 1).astype(float)
    k = np.bincount(idx[ok], weights=matched[ok].astype(float), minlength=len(bins) - 1)
    eff, err = efficiency_errors(k, n)
    return eff, err, n


_DEFINITIONS = (
    ("dm_matched", "double majority"),
    ("perfect_matched", "perfect"),
    ("lhc_matched", "LHC"),
)


def _draw_efficiencies(
    ax: plt.Axes, rows: pd.DataFrame, var: str, bins: np.ndarray, centres: np.ndarray
) -> None:
    """Efficiency points of every matching definition in bins of ``rows[var]``."""
    bin_extent = (centres - bins[:-1], bins[1:] - centres)
    for column, label in _DEFINITIONS:
        eff, err, _ = binned_efficiency(rows[var].to_numpy(), rows[column].to_numpy(), bins)
        ax.errorbar(centres, eff, xerr=bin_extent, yerr=err, fmt="o", ms=4, label=label)


@hep_style
def plot_efficiencies(particles: pd.DataFrame, path: str | Path, pt_min: float = 0.9) -> Path:
    """Double-majority, perfect and LHC efficiency vs pT and vs eta (pT >= ``pt_min``), with
    Clopper-Pearson 68% intervals.

    ``particles`` is the concatenation of :func:`hepexp.metrics.trackml.match_particles`
    tables; only reconstructable particles count.
    """
    table = particles[particles["reconstructable"]]
    high = table[table["pt"].to_numpy() >= pt_min]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    _draw_efficiencies(axes[0], table, "pt", PT_BINS, np.sqrt(PT_BINS[:-1] * PT_BINS[1:]))
    _draw_efficiencies(axes[1], high, "eta", ETA_BINS, 0.5 * (ETA_BINS[:-1] + ETA_BINS[1:]))
    log_scale(axes[0], "x")
    axes[0].axvline(pt_min, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("particle $p_{T}$ [GeV]")
    axes[1].set_xlabel(rf"particle $\eta$ ($p_{{T}} \geq$ {pt_min:g} GeV)")
    for ax in axes:
        ax.set_ylabel("tracking efficiency")
        ax.set_ylim(0, 1.3)
        ax.legend(loc="upper right", ncols=3, title=f"{len(table)} reconstructable particles")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)


@hep_style
def plot_edge_scores(edge_scores: np.ndarray, path: str | Path, score_cut: float = 0.5) -> Path:
    """Histograms of edge scores ((E, 2): score, is-true) for true and false edges."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    true = edge_scores[:, 1] > 0
    ax.hist(edge_scores[true, 0], bins=bins, histtype="step", lw=1.5, label="same particle")
    ax.hist(edge_scores[~true, 0], bins=bins, histtype="step", lw=1.5, label="other")
    ax.axvline(score_cut, color="grey", lw=0.8, ls=":")
    log_scale(ax, "y", plain_numbers=False)
    ax.set_xlabel("edge score")
    ax.set_ylabel("edges / 0.02")
    add_headroom(ax)
    ax.legend(loc="upper right")
    experiment_label(ax)
    return save_figure(fig, path)


#: axis titles of the regressed per-hit parameters (name -> symbol, unit)
_PARAMETERS = {
    "theta": (r"\theta", "rad"),
    "sin_phi": (r"\sin\phi", ""),
    "cos_phi": (r"\cos\phi", ""),
    "q": ("q", "e"),
}


def _residual_label(name: str) -> str:
    symbol, unit = _PARAMETERS.get(name, (name.replace("_", " "), ""))
    text = f"${symbol}^{{pred}} - {symbol}^{{true}}$"
    return f"{text} [{unit}]" if unit else text


@hep_style
def plot_residuals(
    residuals: Mapping[str, np.ndarray], sigmas: Mapping[str, float], path: str | Path
) -> Path:
    """Histogram of predicted - true for every regressed parameter (hits of particles)."""
    names = list(residuals)
    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.8))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        r = residuals[name]
        lo, hi = np.quantile(r, [0.002, 0.998]) if r.size else (-1.0, 1.0)
        ax.hist(r, bins=np.linspace(lo, hi, 100), histtype="stepfilled", alpha=0.75)
        log_scale(ax, "y", plain_numbers=False)
        add_headroom(ax)
        ax.locator_params(axis="x", nbins=5)
        ax.set_xlabel(_residual_label(name))
        ax.set_ylabel("hits / bin")
        sigma = f"$\\sigma$ = {sigmas[name]:.4g}"
        ax.text(0.95, 0.93, sigma, transform=ax.transAxes, ha="right", va="top")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)


def _colours(labels: np.ndarray) -> np.ndarray:
    """A colour per label (cycled, shuffled so neighbouring ids differ); grey for -1 / 0."""
    cmap = plt.get_cmap("tab20")
    _, code = np.unique(labels, return_inverse=True)
    shuffled = np.random.default_rng(0).permutation(max(code.max() + 1, 1) if code.size else 1)
    colours = cmap((shuffled[code] % 20) / 19.0) if code.size else np.zeros((0, 4))
    colours[labels < 0] = (0.6, 0.6, 0.6, 1.0)
    return colours


@hep_style
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
    fig, axes = plt.subplots(2, 2, figsize=(11, 10.5))
    for row, (lab, name) in enumerate(
        ((labels, "reconstructed tracks"), (truth, "true particles"))
    ):
        colours = _colours(np.asarray(lab))
        n = len(np.unique(lab[lab >= 0]))
        axes[row, 0].scatter(xyz[:, 0], xyz[:, 1], c=colours, s=6)
        axes[row, 0].set_xlabel("x [mm]")
        axes[row, 0].set_ylabel("y [mm]")
        axes[row, 0].set_aspect("equal")
        axes[row, 1].scatter(xyz[:, 2], r, c=colours, s=6)
        axes[row, 1].set_xlabel("z [mm]")
        axes[row, 1].set_ylabel("r [mm]")
        for ax in axes[row]:
            ax.locator_params(nbins=5)
            ax.set_title(f"{n} {name}", loc="right", fontsize="medium")
    experiment_label(axes[0, 0], rlabel="")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
