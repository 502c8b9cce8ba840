"""benchmarks/jet_transfer.py: the samples a simulation-trained jet model is checked on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hepexp.data.jets import simulate_jets
from hepexp.models.jet_ae import JetAutoencoder

from .conftest import shared_file

TRANSFORMS = [
    {"name": "m", "fn": "log10", "offset": 1.0, "scale": 1.8},
    {"name": "pt", "fn": "log10", "loc": 1.3, "scale": 1.2},
    {"name": "phi", "scale": 3.0},
    {"name": "eta", "scale": 5.0},
]


def _benchmark():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import jet_transfer
    finally:
        sys.path.pop(0)
    return jet_transfer


def test_samples_inside_and_beyond_the_acceptance() -> None:
    shared_file("jets", "nanoAOD_2015_CMS_Open_Data_ttbar.root")
    samples = _benchmark().samples(4000)
    fresh, stretched, cms, inside = samples.values()
    assert fresh.pt.min() >= 20.0 and fresh.eta.abs().max() <= 4.5
    # beyond the training acceptance: pT down to 15 GeV, |eta| past 4.5, m/pT unchanged
    assert 15.0 <= stretched.pt.min() < 20.0 and stretched.eta.abs().max() > 4.5
    assert abs(np.median(stretched.m / stretched.pt) - np.median(fresh.m / fresh.pt)) < 0.005
    assert (len(cms), len(inside)) == (537, 325)
    assert inside.pt.min() >= 20.0 and inside.eta.abs().max() <= 4.5


def test_metrics_of_a_model_on_a_sample() -> None:
    model = JetAutoencoder(transforms=TRANSFORMS)
    jets = simulate_jets(500, seed=0)
    jets[["m", "pt"]] /= 1e3
    benchmark = _benchmark()
    metrics = benchmark.evaluate(model, jets)
    assert set(benchmark.COLUMNS) <= set(metrics)
    # an untrained model is far from the jets it is given
    assert metrics["pt_rel_std"] > 0.01
