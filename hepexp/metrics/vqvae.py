"""Metrics of hit tokenizers: 3D reconstruction error of hits in mm.

Definitions (the VQ-VAE track tokenization study): the error of a hit is the Euclidean distance between its true
and reconstructed position; ``within_25mm`` is the share of hits with error < 25 mm; the area
under the error CDF over 0-T mm is normalised by T (1 for a perfect tokenizer):
AUC = (1/T) * integral_0^T P(error <= e) de = mean(max(T - error, 0)) / T, computed exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: barrel volumes of the TrackML detector and their names
VOLUME_NAMES = {8: "pixel_barrel", 13: "short_strip_barrel", 17: "long_strip_barrel"}
#: transverse-radius bin edges (mm), halfway between the barrel layers (32, 72, ..., 1020 mm)
RADIUS_EDGES = np.array([0, 52, 94, 144, 216, 310, 430, 580, 740, 920, 1100, 1e9], dtype=float)


def hit_errors(true: np.ndarray, reco: np.ndarray) -> np.ndarray:
    """Euclidean distance (N,) between true and reconstructed positions (N, 3)."""
    true, reco = np.asarray(true, np.float64), np.asarray(reco, np.float64)
    if true.shape != reco.shape or true.ndim != 2 or true.shape[1] != 3:
        raise ValueError(f"expected two (N, 3) arrays, got {true.shape} and {reco.shape}")
    return np.linalg.norm(reco - true, axis=1)


def error_summary(errors: np.ndarray, threshold: float = 25.0, cdf_max: float = 150.0) -> dict:
    """Mean, median, share within ``threshold`` and normalised AUC of the error CDF (0-cdf_max)."""
    errors = np.asarray(errors, np.float64)
    if errors.size == 0:
        return {"n_hits": 0}
    tag = f"{threshold:g}mm"
    return {
        "n_hits": int(errors.size),
        "mean_error_mm": float(errors.mean()),
        "median_error_mm": float(np.median(errors)),
        f"within_{tag}": float((errors < threshold).mean()),
        f"auc_0_{cdf_max:g}mm": float(np.clip(cdf_max - errors, 0.0, None).mean() / cdf_max),
    }


def error_cdf(errors: np.ndarray, grid: np.ndarray | None = None) -> pd.DataFrame:
    """The empirical CDF of ``errors`` on ``grid`` (default 0-300 mm in 0.5 mm steps)."""
    grid = np.arange(0.0, 300.5, 0.5) if grid is None else np.asarray(grid, np.float64)
    errors = np.sort(np.asarray(errors, np.float64))
    cdf = np.searchsorted(errors, grid, side="right") / max(len(errors), 1)
    return pd.DataFrame({"error_mm": grid, "cdf": cdf})


def per_group(
    errors: np.ndarray, groups: np.ndarray, names: Mapping[int, str] | None = None, **kwargs
) -> dict[str, dict]:
    """:func:`error_summary` per value of ``groups`` (e.g. volume_id), keyed by name."""
    names = names or {}
    out = {}
    for g in np.unique(groups):
        out[names.get(int(g), f"volume_{int(g)}")] = error_summary(errors[groups == g], **kwargs)
    return out


def per_radius(
    errors: np.ndarray, radius: np.ndarray, edges: np.ndarray = RADIUS_EDGES, **kwargs
) -> pd.DataFrame:
    """:func:`error_summary` in bins of transverse radius (one row per non-empty bin)."""
    which = np.digitize(radius, edges) - 1
    rows = []
    for b in np.unique(which):
        sel = which == b
        rows.append(
            {
                "r_min_mm": edges[b],
                "r_max_mm": edges[b + 1],
                "r_mean_mm": float(radius[sel].mean()),
                **error_summary(errors[sel], **kwargs),
            }
        )
    return pd.DataFrame(rows)
