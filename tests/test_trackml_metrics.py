"""Tests of hepexp.metrics.trackml: hit weights, score, efficiencies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trackml_helpers import random_event, real_event

from hepexp.metrics.trackml import hit_weights, order_weight_matrix, pt_weight, score_event
from hepexp.metrics.trackml_reference import reference_hit_weights, reference_score_event

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


# ---------------------------------------------------------------- score


def _submission(truth: pd.DataFrame, track_id) -> pd.DataFrame:
    return pd.DataFrame({"hit_id": truth["hit_id"].to_numpy(), "track_id": np.asarray(track_id)})


def _check(truth, sub, unassigned=-1):
    fast = score_event(truth, sub, unassigned=unassigned)
    ref = reference_score_event(truth, sub, unassigned=unassigned)
    assert fast == pytest.approx(ref, rel=1e-12, abs=1e-15)
    return fast


def test_score_hand_example():
    truth = pd.DataFrame(
        {
            "hit_id": np.arange(1, 8),
            "particle_id": [5, 5, 5, 5, 9, 9, 0],
            "weight": [0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.0],
        }
    )
    # track 1: 3 of 4 hits of particle 5 + one of 9 -> good (0.3); track 2: 1-1 tie -> not good
    sub = pd.DataFrame({"hit_id": [3, 1, 2, 5, 4, 6], "track_id": [1, 1, 1, 1, 2, 2]})
    assert score_event(truth, sub) == pytest.approx(0.3 / 0.8)
    # a particle with a single hit in truth is found by leaving its hit unassigned
    truth1 = truth.assign(particle_id=[5, 5, 5, 5, 9, 8, 0])
    sub1 = pd.DataFrame({"hit_id": [1, 2, 3, 4, 5], "track_id": [1, 1, 1, 1, -1]})
    assert score_event(truth1, sub1) == pytest.approx(0.8 / 0.8)
    # unassigned=None: -1 is an ordinary track label
    sub2 = pd.DataFrame({"hit_id": [1, 2, 3, 4, 5, 6], "track_id": [1, 1, 1, 1, -1, -1]})
    assert score_event(truth, sub2, unassigned=None) == pytest.approx(0.8 / 0.8)
    assert score_event(truth, sub2) == pytest.approx(0.4 / 0.8)


def test_score_perfect_real_event():
    truth = real_event()["truth"]
    assert _check(truth, _submission(truth, truth["particle_id"])) == pytest.approx(1.0)
    noise_unassigned = np.where(truth["particle_id"] == 0, -1, truth["particle_id"])
    assert _check(truth, _submission(truth, noise_unassigned)) == pytest.approx(1.0)


def test_score_standard_submissions_real_event():
    truth = real_event()["truth"]
    rng = np.random.default_rng(0)
    pid = truth["particle_id"].to_numpy()
    n = len(truth)
    assert _check(truth, _submission(truth, -np.ones(n, dtype=int))) == 0.0  # all noise
    assert _check(truth, _submission(truth, np.zeros(n, dtype=int))) == 0.0  # one track
    assert _check(truth, _submission(truth, rng.integers(0, 500, n))) < 0.05  # random
    # merged: two particles per track -> the larger one may still pass
    _, code = np.unique(pid, return_inverse=True)
    merged = _check(truth, _submission(truth, code // 2))
    assert 0.1 < merged < 0.9
    # split: each particle cut in two halves -> the bigger half survives only if > 50%
    order = pd.Series(np.arange(n)).groupby(pid).cumcount().to_numpy()
    split = _check(truth, _submission(truth, code * 2 + (order % 2)))
    assert 0.0 < split < 0.9
    # shuffled rows and float labels do not change anything
    perfect = _submission(truth, pid).sample(frac=1.0, random_state=1)
    assert _check(truth, perfect.astype({"track_id": "float64"})) == pytest.approx(1.0)
    # partial: half of the hits missing
    partial = _check(truth, _submission(truth, pid).sample(frac=0.5, random_state=2))
    assert 0.0 < partial < 0.8


@pytest.mark.parametrize("seed", range(40))
def test_score_random_submissions_equal_reference(seed):
    rng = np.random.default_rng(seed)
    ev = random_event(rng, n_particles=int(rng.integers(1, 30)), noise=int(rng.integers(0, 20)))
    truth = ev["truth"]
    if len(truth) == 0:
        return
    pid = truth["particle_id"].to_numpy()
    _, code = np.unique(pid, return_inverse=True)
    # corrupt a perfect submission: relabel a fraction of hits, drop some, mark some -1
    labels = code.copy()
    k = rng.random(len(labels))
    labels[k < 0.2] = rng.integers(0, code.max() + 3, (k < 0.2).sum())
    labels[(k >= 0.2) & (k < 0.3)] = -1
    sub = _submission(truth, labels)
    sub = sub[rng.random(len(sub)) > 0.1].sample(frac=1.0, random_state=seed)
    for unassigned in (-1, None):
        _check(truth, sub, unassigned=unassigned)
    _check(truth, _submission(truth, rng.integers(-1, 4, len(truth))))


def test_score_zero_weight_and_bad_input():
    truth = pd.DataFrame({"hit_id": [1, 2], "particle_id": [0, 0], "weight": [0.0, 0.0]})
    sub = pd.DataFrame({"hit_id": [1, 2], "track_id": [0, 0]})
    assert np.isnan(score_event(truth, sub))
    truth = truth.assign(weight=[0.5, 0.5], particle_id=[3, 3])
    with pytest.raises(ValueError, match="duplicated"):
        score_event(truth, pd.DataFrame({"hit_id": [1, 1], "track_id": [0, 1]}))
    with pytest.raises(ValueError, match="not in truth"):
        score_event(truth, pd.DataFrame({"hit_id": [1, 7], "track_id": [0, 1]}))
    with pytest.raises(ValueError, match="track_id"):
        score_event(truth, pd.DataFrame({"hit_id": [1, 2], "track_id": [0.5, 1.0]}))
    with pytest.raises(ValueError, match="submission: missing column"):
        score_event(truth, pd.DataFrame({"hit_id": [1, 2]}))
