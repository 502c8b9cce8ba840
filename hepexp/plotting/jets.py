"""Plots of jet autoencoder reconstructions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepexp.metrics.jets import RELATIVE, residuals, with_energy
from hepexp.plotting import (
    add_headroom,
    experiment_label,
    hep_style,
    log_scale,
    plt,
    save_figure,
)

_SYMBOLS = {"m": "m", "pt": "p_{T}", "phi": r"\phi", "eta": r"\eta", "E": "E"}
_UNITS = {"m": "GeV", "pt": "GeV", "phi": "rad", "eta": "", "E": "GeV"}
_LOG_X = ("m", "pt", "E")
VARIABLES = ("m", "pt", "phi", "eta", "E")


def _with_unit(text: str, unit: str) -> str:
    return f"{text} [{unit}]" if unit else text


def _label(var: str) -> str:
    """Axis title of a jet variable, e.g. ``$p_{T}$ [GeV]``."""
    return _with_unit(f"${_SYMBOLS[var]}$", _UNITS[var])


def _residual_label(var: str) -> str:
    """Axis title of a residual: relative for m, pT, E; absolute (with unit) for eta, phi."""
    s = _SYMBOLS[var]
    if var in RELATIVE:
        return f"$({s}^{{out}} - {s}^{{in}}) / {s}^{{in}}$"
    return _with_unit(f"${s}^{{out}} - {s}^{{in}}$", _UNITS[var])


def _bins(values: np.ndarray, var: str, n: int = 80) -> np.ndarray:
    if var in _LOG_X:
        positive = values[values > 0]
        lo, hi = np.quantile(positive, [0.0005, 0.9995]) if positive.size else (1e-3, 1.0)
        return np.geomspace(max(lo, 1e-3), hi, n)
    lo, hi = np.quantile(values, [0.0005, 0.9995])
    return np.linspace(lo, hi, n)


def _panels() -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(1, len(VARIABLES), figsize=(4.2 * len(VARIABLES), 3.8))
    experiment_label(axes[0])
    return fig, axes


@hep_style
def plot_jet_reconstruction(
    true: dict[str, np.ndarray], pred: dict[str, np.ndarray], out_dir: str | Path
) -> list[Path]:
    """Input vs output distributions, residual histograms and residuals vs pT (PNG + PDF)."""
    out_dir = Path(out_dir)
    true_e, pred_e = with_energy(true), with_energy(pred)
    res = residuals(true, pred)
    paths = []

    fig, axes = _panels()
    for ax, var in zip(axes, VARIABLES, strict=True):
        bins = _bins(true_e[var], var)
        ax.hist(true_e[var], bins=bins, histtype="step", label="input", lw=1.5)
        ax.hist(pred_e[var], bins=bins, histtype="step", label="reconstructed", lw=1.2, ls="--")
        if var in _LOG_X:
            log_scale(ax, "x")
            log_scale(ax, "y", plain_numbers=False)
        ax.set_xlabel(_label(var))
        ax.set_ylabel("jets / bin")
        add_headroom(ax)
    axes[-1].legend(loc="upper right")
    fig.tight_layout()
    paths.append(save_figure(fig, out_dir / "distributions.png"))

    fig, axes = _panels()
    for ax, var in zip(axes, VARIABLES, strict=True):
        v = res[var][np.isfinite(res[var])]
        lo, hi = np.quantile(v, [0.005, 0.995]) if v.size else (-1, 1)
        ax.hist(v, bins=np.linspace(lo, hi, 100), histtype="stepfilled", alpha=0.7)
        ax.locator_params(axis="x", nbins=5)
        ax.set_xlabel(_residual_label(var))
        ax.set_ylabel("jets / bin")
        log_scale(ax, "y", plain_numbers=False)
    fig.tight_layout()
    paths.append(save_figure(fig, out_dir / "residuals.png"))

    edges = np.geomspace(max(true["pt"].min(), 1e-3), true["pt"].max() * 1.0001, 15)
    centers = np.sqrt(edges[1:] * edges[:-1])
    which = np.digitize(true["pt"], edges) - 1
    fig, axes = _panels()
    for ax, var in zip(axes, VARIABLES, strict=True):
        stats = np.full((len(centers), 3), np.nan)
        for b in range(len(centers)):
            v = res[var][(which == b) & np.isfinite(res[var])]
            if v.size >= 10:
                stats[b] = np.quantile(v, [0.16, 0.5, 0.84])
        ax.fill_between(centers, stats[:, 0], stats[:, 2], alpha=0.3, label="68% band")
        ax.plot(centers, stats[:, 1], marker="o", label="median")
        ax.axhline(0, color="k", lw=0.5)
        log_scale(ax, "x")
        ax.set_xlabel(_label("pt") + " (input)")
        ax.set_ylabel(_residual_label(var))
        add_headroom(ax)
    axes[-1].legend(loc="upper right")
    fig.tight_layout()
    paths.append(save_figure(fig, out_dir / "residuals_vs_pt.png"))
    return paths
