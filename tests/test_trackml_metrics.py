"""Tests of hepexp.metrics.trackml: hit weights, score, efficiencies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trackml_helpers import random_event, real_event

from hepexp.metrics.trackml import hit_weights, order_weight_matrix, pt_weight
from hepexp.metrics.trackml_reference import reference_hit_weights

# ---------------------------------------------------------------- hit weights


@pytest.mark.parametrize("nhits_from", ["particles", "truth"])
def test_hit_weights_match_real_truth_file(nhits_from):
    ev = real_event()
    truth, particles = ev["truth"], ev["particles"]
    w = hit_weights(truth, particles, nhits_from=nhits_from)
    ref = truth["weight"].to_numpy()
    assert w.shape == (len(truth),)
    assert np.array_equal(w == 0, ref == 0)
    assert (ref > 0).sum() == 4300  # zero pattern is not trivial
    # one global factor: the file's weights sum to the kept share of the full event
    factor = ref.sum()
    nz = ref > 0
    assert np.max(np.abs(w[nz] * factor / ref[nz] - 1)) < 1e-5  # file prints 6 digits
    assert w.sum() == pytest.approx(1.0)


def test_hit_weights_zero_cases_on_real_event():
    ev = real_event()
    truth, particles = ev["truth"], ev["particles"]
    w = hit_weights(truth, particles)
    merged = truth.merge(particles, on="particle_id", how="left")
    gen = (merged["particle_id"].to_numpy() >> 24) & 0xFFF
    assert np.all(w[merged["particle_id"].to_numpy() == 0] == 0)
    assert np.all(w[gen != 0] == 0)
    assert np.all(w[merged["nhits"].to_numpy() < 4] == 0)
    assert ((gen != 0) & (merged["particle_id"].to_numpy() != 0)).sum() > 300


def test_order_matrix_rows():
    table = order_weight_matrix()
    assert table.shape == (21, 20)
    assert np.allclose(table[4:].sum(axis=1), 1.0)
    assert np.all(table[:4] == 0)
    # 9 hits: the proposal itself, normalised
    prop = np.array([10, 8, 6, 5, 3, 3, 3, 5, 6], float)
    assert np.allclose(table[9, :9], prop / prop.sum())
    # 17 hits: supports every 2 hits, midpoints interpolated
    assert np.isclose(table[17, 1] / table[17, 0], 9 / 10)


def test_pt_weight_shape():
    pt = np.array([0.0, 0.04, 0.05, 0.3, 0.5, 1.75, 3.0, 10.0])
    assert np.allclose(pt_weight(pt), [0, 0, 0.2, 0.2, 0.2, 0.6, 1.0, 1.0])


@pytest.mark.parametrize("seed", range(12))
def test_hit_weights_equal_reference_loop(seed):
    ev = random_event(np.random.default_rng(seed), max_hits=26)  # > 20 hits, ties in tz
    w = hit_weights(ev["truth"], ev["particles"])
    ref = reference_hit_weights(ev["truth"], ev["particles"])
    assert np.allclose(w, ref, rtol=1e-12, atol=1e-15)
    assert (w > 0).any()


def test_hit_weights_long_tracks_and_ties():
    # one primary with 24 hits at pT 5 GeV: hits beyond the 20th get 0, first 20 the 20-row
    n = 24
    particles = pd.DataFrame(
        {"particle_id": [1 << 36], "vz": [0.0], "px": [5.0], "py": [0.0], "nhits": [n]}
    )
    tz = np.arange(1.0, n + 1)
    tz[5] = tz[4]  # tie: ranks 5 and 6 average to 5.5 -> index 4 for both
    truth = pd.DataFrame({"hit_id": np.arange(n) + 1, "particle_id": [1 << 36] * n, "tz": tz})
    w = hit_weights(truth, particles, normalise=False)
    row = order_weight_matrix()[20]
    expected = np.concatenate([row, np.zeros(4)])
    expected[5] = row[4]
    assert np.allclose(w, expected)


def test_hit_weights_bad_input():
    ev = real_event()
    truth = ev["truth"].astype({"particle_id": "float64"})
    with pytest.raises(ValueError, match="truth.particle_id"):
        hit_weights(truth, ev["particles"])
    with pytest.raises(ValueError, match="missing column"):
        hit_weights(ev["truth"].drop(columns="tz"), ev["particles"])
    short = ev["particles"].assign(nhits=ev["particles"]["nhits"] - 2)
    with pytest.raises(ValueError, match="more hits in truth"):
        hit_weights(ev["truth"], short.assign(nhits=short["nhits"].clip(lower=4)))
    # nhits_from="truth" ignores particles.nhits
    w = hit_weights(ev["truth"], short, nhits_from="truth")
    assert np.allclose(w, hit_weights(ev["truth"], ev["particles"]))
