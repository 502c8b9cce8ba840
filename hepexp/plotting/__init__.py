"""Plots written as PNG files. Matplotlib runs headless (Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hepexp.utils.io import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


__all__ = ["plt", "save_figure"]
