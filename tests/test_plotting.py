"""The plot style: PNG + PDF written atomically, the experiment label, the mplhep fallback,
binomial error bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hepexp.metrics.stats import clopper_pearson
from hepexp.plotting import style
from hepexp.plotting.trackml import binned_efficiency, plot_efficiencies


def _texts(fig: plt.Figure) -> str:
    return " ".join(t.get_text() for t in fig.findobj(plt.Text))


@style.hep_style
def _labelled_figure() -> plt.Figure:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    style.experiment_label(ax)
    return fig


def test_save_figure_writes_png_and_pdf_and_closes_the_figure(tmp_path: Path) -> None:
    fig = _labelled_figure()
    path = style.save_figure(fig, tmp_path / "plot.png")
    assert path == tmp_path / "plot.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plot.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.pdf", "plot.png"]
    assert not plt.fignum_exists(fig.number)


def test_save_figure_writes_nothing_when_a_format_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plot.png").write_bytes(b"the previous plot")
    fig = _labelled_figure()
    real_savefig = fig.savefig

    def savefig(fname, **kwargs):
        if kwargs.get("format") == "pdf":
            raise OSError("disk full")
        real_savefig(fname, **kwargs)

    monkeypatch.setattr(fig, "savefig", savefig)
    with pytest.raises(OSError, match="disk full"):
        style.save_figure(fig, tmp_path / "plot.png")
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"], "no temp file, no lone PDF"
    assert (tmp_path / "plot.png").read_bytes() == b"the previous plot"
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize(("source", "label"), [("simulate", "Simulation"), ("/data", "Open Data")])
def test_label_names_the_experiment_and_the_kind_of_data(source: str, label: str) -> None:
    style.label_plots_for_source(source)
    try:
        fig = _labelled_figure()
        assert "hepexp" in _texts(fig) and label in _texts(fig)
        plt.close(fig)
    finally:
        style.label_plots_for_source("simulate")


def test_plots_use_the_hep_style_only_inside_plot_functions() -> None:
    before = plt.rcParams["xtick.direction"]

    @style.hep_style
    def direction() -> str:
        return plt.rcParams["xtick.direction"]

    assert direction() == "in"
    assert plt.rcParams["xtick.direction"] == before


def test_plain_matplotlib_when_mplhep_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(style, "mplhep", None)
    assert style.style()[0] is style._CONVENTIONS
    fig = _labelled_figure()
    assert "hepexp" in _texts(fig) and "Simulation" in _texts(fig)
    style.save_figure(fig, tmp_path / "plain.png")
    assert (tmp_path / "plain.pdf").exists()


def test_efficiency_error_bars_are_clopper_pearson_intervals() -> None:
    values = np.array([0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5])
    matched = np.array([1, 1, 1, 0, 1, 1, 1], dtype=bool)
    eff, err, n = binned_efficiency(values, matched, np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(n, [4, 3, 0])
    np.testing.assert_allclose(eff[:2], [0.75, 1.0])
    lower, upper = clopper_pearson([3, 3], [4, 3])
    np.testing.assert_allclose(err[0, :2], eff[:2] - lower)
    np.testing.assert_allclose(err[1, :2], upper - eff[:2])
    assert err[1, 1] == 0 and err[0, 1] > 0.2, "all 3 matched: the interval reaches down only"
    assert np.isnan(eff[2])


def test_efficiency_plot_has_units_and_the_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    particles = pd.DataFrame(
        {
            "pt": rng.uniform(0.2, 20, 500),
            "eta": rng.uniform(-3, 3, 500),
            "reconstructable": True,
            **{c: rng.random(500) < 0.9 for c in ("dm_matched", "perfect_matched", "lhc_matched")},
        }
    )
    seen = {}
    real_save = style.save_figure

    def keep_text(fig: plt.Figure, path: Path, **kwargs) -> Path:
        seen["axes"] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        seen["text"] = _texts(fig)
        return real_save(fig, path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hepexp.plotting.trackml.save_figure", keep_text)
        plot_efficiencies(particles, tmp_path / "efficiency.png")
    assert seen["axes"][0][0].endswith("[GeV]")
    assert "GeV" in seen["axes"][1][0]
    assert "hepexp" in seen["text"] and "Simulation" in seen["text"]
    assert (tmp_path / "efficiency.png").exists() and (tmp_path / "efficiency.pdf").exists()
