"""Plots written as PNG and PDF files in the HEP style (see :mod:`hepexp.plotting.style`).
Matplotlib runs headless (Agg)."""

from __future__ import annotations

from hepexp.plotting.style import (
    add_headroom,
    experiment_label,
    hep_style,
    label_plots_for_source,
    log_scale,
    plt,
    save_figure,
)

__all__ = [
    "add_headroom",
    "experiment_label",
    "hep_style",
    "label_plots_for_source",
    "log_scale",
    "plt",
    "save_figure",
]
