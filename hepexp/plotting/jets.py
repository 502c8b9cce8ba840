"""Plots of jet autoencoder reconstructions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepexp.metrics.jets import RELATIVE, residuals, with_energy
from hepexp.plotting import plt, save_figure

_LABELS = {"m": "m [GeV]", "pt": "$p_T$ [GeV]", "phi": r"$\phi$", "eta": r"$\eta$", "E": "E [GeV]"}
_LOG_X = ("m", "pt", "E")
VARIABLES = ("m", "pt", "phi", "eta", "E")


def _bins(values: np.ndarray, var: str, n: int = 80) -> np.ndarray:
    if var in _LOG_X:
        positive = values[values > 0]
        lo, hi = np.quantile(positive, [0.0005, 0.9995]) if positive.size else (1e-3, 1.0)
        return np.geomspace(max(lo, 1e-3), hi, n)
    lo, hi = np.quantile(values, [0.0005, 0.9995])
    return np.linspace(lo, hi, n)


def plot_jet_reconstruction(
    true: dict[str, np.ndarray], pred: dict[str, np.ndarray], out_dir: str | Path
) -> list[Path]:
    """Input vs output distributions, residual histograms and residuals vs pT, as PNGs."""
    out_dir = Path(out_dir)
    true_e, pred_e = with_energy(true), with_energy(pred)
    res = residuals(true, pred)
    paths = []

    fig, axes = plt.subplots(1, len(VARIABLES), figsize=(4 * len(VARIABLES), 3.4))
    for ax, var in zip(axes, VARIABLES, strict=True):
        bins = _bins(true_e[var], var)
        ax.hist(true_e[var], bins=bins, histtype="step", label="input", lw=1.5)
        ax.hist(pred_e[var], bins=bins, histtype="step", label="output", lw=1.2, ls="--")
        if var in _LOG_X:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(_LABELS[var])
    axes[0].set_ylabel("jets")
    axes[0].legend()
    fig.suptitle("Jet autoencoder: input vs reconstructed distributions")
    paths.append(save_figure(fig, out_dir / "distributions.png"))

    fig, axes = plt.subplots(1, len(VARIABLES), figsize=(4 * len(VARIABLES), 3.4))
    for ax, var in zip(axes, VARIABLES, strict=True):
        v = res[var][np.isfinite(res[var])]
        lo, hi = np.quantile(v, [0.005, 0.995]) if v.size else (-1, 1)
        ax.hist(v, bins=np.linspace(lo, hi, 100), histtype="stepfilled", alpha=0.7)
        kind = "(out - in) / in" if var in RELATIVE else "out - in"
        ax.set_xlabel(f"{_LABELS[var].split(' [')[0]}: {kind}")
        ax.set_yscale("log")
    axes[0].set_ylabel("jets")
    fig.suptitle("Residuals")
    paths.append(save_figure(fig, out_dir / "residuals.png"))

    edges = np.geomspace(max(true["pt"].min(), 1e-3), true["pt"].max() * 1.0001, 15)
    centers = np.sqrt(edges[1:] * edges[:-1])
    which = np.digitize(true["pt"], edges) - 1
    fig, axes = plt.subplots(1, len(VARIABLES), figsize=(4 * len(VARIABLES), 3.4))
    for ax, var in zip(axes, VARIABLES, strict=True):
        stats = np.full((len(centers), 3), np.nan)
        for b in range(len(centers)):
            v = res[var][(which == b) & np.isfinite(res[var])]
            if v.size >= 10:
                stats[b] = np.quantile(v, [0.16, 0.5, 0.84])
        ax.fill_between(centers, stats[:, 0], stats[:, 2], alpha=0.3, label="68% band")
        ax.plot(centers, stats[:, 1], marker="o", label="median")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel(_LABELS["pt"])
        ax.set_title(f"{var} residual")
    axes[0].legend()
    fig.suptitle("Residuals vs jet $p_T$")
    paths.append(save_figure(fig, out_dir / "residuals_vs_pt.png"))
    return paths
