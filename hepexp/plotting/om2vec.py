"""Plots of om2vec evaluations: example reconstructions, per-OM distances, latent summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hepexp.plotting import add_headroom, experiment_label, hep_style, log_scale, plt, save_figure


def _window(true: np.ndarray, pad: int = 20) -> tuple[int, int]:
    hit = np.flatnonzero(true)
    lo, hi = int(hit[0]), int(hit[-1]) + 1
    span = hi - lo
    return max(lo - max(pad, span // 10), 0), min(hi + max(pad, span // 10), len(true))


@hep_style
def plot_examples(
    examples: Sequence[Mapping[str, np.ndarray | float]],
    path: str | Path,
    bin_width: float = 1.0,
    max_display_bins: int = 160,
) -> Path:
    """True histograms (normalised) vs the model's and the baseline's bin probabilities.

    ``examples``: dicts with ``true``, ``model``, ``baseline`` (dense rows; ``baseline`` may be
    None), ``n_photons``, ``js``, ``js_baseline``. Each panel shows the OM's photon time window;
    wide windows are shown in merged display bins (the JS values are of the 1-bin histograms).
    """
    n = len(examples)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    for ax, ex in zip(axes.flat, examples, strict=False):
        true = np.asarray(ex["true"], dtype=np.float64)
        lo, hi = _window(true)
        merge = max(1, int(np.ceil((hi - lo) / max_display_bins)))
        hi = min(lo + merge * int(np.ceil((hi - lo) / merge)), len(true))
        edges = (np.arange(lo, hi + 1, merge)) * bin_width
        if edges[-1] < hi * bin_width:
            edges = np.append(edges, hi * bin_width)

        def shown(values: np.ndarray, lo=lo, hi=hi, merge=merge) -> np.ndarray:
            v = np.asarray(values, dtype=np.float64)[lo:hi]
            return np.add.reduceat(v, np.arange(0, len(v), merge))

        ax.stairs(shown(true / true.sum()), edges, label="true", color="k", lw=1.4)
        ax.stairs(shown(ex["model"]), edges, label=f"om2vec JS {ex['js']:.2f}", color="C0")
        if ex.get("baseline") is not None:
            label = f"AGMM JS {ex['js_baseline']:.2f}"
            ax.stairs(shown(ex["baseline"]), edges, label=label, color="C3", ls="--")
        ax.set_title(f"{int(ex['n_photons'])} photons", loc="right", fontsize="small")
        ax.set_xlabel(r"$t - t_{first}^{event}$ [ns]")
        ax.set_ylabel(f"photon share / {merge * bin_width:g} ns")
        add_headroom(ax, 0.35)
        ax.legend(loc="upper right", fontsize="x-small")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    experiment_label(axes[0, 0])
    fig.tight_layout()
    return save_figure(fig, path)


@hep_style
def plot_js(
    n_photons: np.ndarray,
    distances: Mapping[str, np.ndarray],
    path: str | Path,
) -> Path:
    """Per-OM JS distance distributions and their mean vs photon count, one curve per method."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    bins = np.linspace(0, 1, 51)
    for name, js in distances.items():
        ax1.hist(js, bins=bins, histtype="step", lw=1.4, label=f"{name} (mean {np.mean(js):.3f})")
    ax1.set_xlabel("Jensen-Shannon distance per OM")
    ax1.set_ylabel("OMs / 0.02")
    add_headroom(ax1)
    ax1.legend(loc="upper right")
    experiment_label(ax1)
    edges = np.unique(np.geomspace(1, max(2, n_photons.max()) + 1, 20).astype(int))
    which = np.clip(np.searchsorted(edges, n_photons, side="right") - 1, 0, len(edges) - 2)
    centres = np.sqrt(edges[:-1] * edges[1:])
    for name, js in distances.items():
        means = np.array(
            [js[which == i].mean() if (which == i).any() else np.nan for i in range(len(centres))]
        )
        ax2.plot(centres, means, marker="o", ms=3, label=name)
    log_scale(ax2, "x")
    ax2.set_xlabel("photons per OM")
    ax2.set_ylabel("mean JS distance")
    ax2.set_ylim(0, 1.3)
    ax2.legend(loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


@hep_style
def plot_latents(latents: np.ndarray, n_photons: np.ndarray, path: str | Path) -> Path:
    """Per-dimension spread of the posterior means, their correlations, and the first two
    principal components coloured by photon count."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    std = latents.std(axis=0)
    axes[0].bar(np.arange(len(std)), std)
    axes[0].set_xlabel("latent dimension")
    axes[0].set_ylabel("std of posterior mean over OMs")
    corr = np.corrcoef(latents.T) if len(latents) > 1 else np.eye(latents.shape[1])
    im = axes[1].imshow(np.nan_to_num(corr), cmap="coolwarm", vmin=-1, vmax=1)
    for ax in axes[:2]:
        ax.locator_params(axis="x", integer=True)
        ax.tick_params(axis="x", which="minor", bottom=False, top=False)
    axes[1].locator_params(axis="y", integer=True)
    axes[1].minorticks_off()
    axes[1].set_xlabel("latent dimension")
    axes[1].set_ylabel("latent dimension")
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="correlation")
    centred = latents - latents.mean(axis=0)
    if len(latents) > 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = centred @ vt[:2].T
        sc = axes[2].scatter(pcs[:, 0], pcs[:, 1], c=np.log10(n_photons), s=3, cmap="viridis")
        fig.colorbar(sc, ax=axes[2], fraction=0.046, label=r"$\log_{10}$(photons per OM)")
    axes[2].set_xlabel("PC 1")
    axes[2].set_ylabel("PC 2")
    experiment_label(axes[0])
    fig.tight_layout()
    return save_figure(fig, path)
