"""The look of every hepexp plot: the HEP style of mplhep (plain matplotlib with the same
conventions where mplhep is absent), the experiment label, and saving as PNG + PDF.

Plot functions are decorated with :func:`hep_style`, put :func:`experiment_label` on their
(first) axes and end with :func:`save_figure`. The label says "hepexp Simulation" for data of
the built-in simulators and "hepexp Open Data" for files read from disk; the tasks choose it
with :func:`label_plots_for_source`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from hepexp.utils.io import atomic_path  # noqa: E402

try:
    import mplhep
except ImportError:  # not installed (e.g. a bare GPU machine): plain matplotlib
    mplhep = None

EXPERIMENT = "hepexp"
SIMULATION = "Simulation"
OPEN_DATA = "Open Data"

#: HEP conventions for plain matplotlib: ticks inside on all four sides with minor ticks, axis
#: titles at the ends of the axes, legends without frames
_CONVENTIONS: dict[str, Any] = {
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "xaxis.labellocation": "right",
    "yaxis.labellocation": "top",
    "legend.frameon": False,
}
#: sizes for figures of ~4 inches per panel (mplhep's styles are sized for 10 x 10 inches)
_SIZES: dict[str, Any] = {
    "font.size": 11,
    "axes.linewidth": 1.0,
    "lines.linewidth": 1.5,
    "xtick.major.size": 6,
    "xtick.minor.size": 3,
    "ytick.major.size": 6,
    "ytick.minor.size": 3,
    "xtick.major.pad": 4,
    "ytick.major.pad": 4,
    "legend.fontsize": "small",
}

_label: ContextVar[str] = ContextVar("hepexp_plot_label", default=SIMULATION)

P = ParamSpec("P")
R = TypeVar("R")


def style() -> list[dict[str, Any]]:
    """The rcParams of hepexp plots: mplhep's ROOT style (or the plain conventions), resized."""
    base = mplhep.style.ROOT if mplhep is not None else _CONVENTIONS
    return [base, _SIZES]


def hep_style(func: Callable[P, R]) -> Callable[P, R]:
    """Run a plot function under :func:`style` (the global matplotlib settings stay as they
    were)."""

    @functools.wraps(func)
    def styled(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.style.context(style()):
            return func(*args, **kwargs)

    return styled


def label_plots_for_source(source: Any) -> None:
    """Label the plots made from now on for data from ``data.source``: "Simulation" for the
    built-in simulators (``simulate``), "Open Data" for files."""
    _label.set(SIMULATION if source in (None, "simulate") else OPEN_DATA)


def experiment_label(ax: plt.Axes, rlabel: str = "") -> None:
    """Draw "hepexp <label>" above the top-left corner of ``ax``, ``rlabel`` above its right."""
    text = _label.get()
    if mplhep is not None:
        mplhep.label.exp_label(exp=EXPERIMENT, llabel=text, rlabel=rlabel, loc=0, ax=ax)
        return
    name = ax.text(0, 1.015, EXPERIMENT, transform=ax.transAxes, weight="bold", va="bottom")
    ax.annotate(f" {text}", xy=(1, 0), xycoords=name, va="bottom", style="italic")
    if rlabel:
        ax.text(1, 1.015, rlabel, transform=ax.transAxes, ha="right", va="bottom")


def log_scale(ax: plt.Axes, axis: str = "x", plain_numbers: bool = True) -> None:
    """Put ``ax``'s ``axis`` ("x" or "y") on a log scale with readable labels: plain numbers
    at 1, 2, 5 x 10^n (for ranges of a few decades, e.g. GeV), else powers of ten; minor ticks
    unlabelled."""
    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    if plain_numbers:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FormatStrFormatter("%g"))
    target.set_minor_formatter(NullFormatter())


def add_headroom(ax: plt.Axes, share: float = 0.25) -> None:
    """Raise the top of the y range so that its upper ``share`` is free for the legend."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        log_lo, log_hi = np.log10(lo), np.log10(hi)
        ax.set_ylim(lo, 10 ** (log_lo + (log_hi - log_lo) / (1 - share)))
    else:
        ax.set_ylim(lo, lo + (hi - lo) / (1 - share))


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` and as PDF beside it (``x.png`` and ``x.pdf``), then close it.

    Both files are written to temporary names first and renamed only when both are complete."""
    path = Path(path)
    outputs = [path] if path.suffix == ".pdf" else [path, path.with_suffix(".pdf")]
    try:
        with contextlib.ExitStack() as stack:
            for out in outputs:
                tmp = stack.enter_context(atomic_path(out))
                fig.savefig(
                    tmp, dpi=dpi, bbox_inches="tight", format=out.suffix.lstrip(".") or "png"
                )
    finally:
        plt.close(fig)
    return path
