"""Tests of hepexp.data.trackml.subevents and hepexp.data.trackml.views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trackml_helpers import random_event, real_event

from hepexp.data.trackml.subevents import sample_subevent, select

# ---------------------------------------------------------------- sub-events


def test_sample_subevent_fixed_count_real_event():
    ev = real_event(with_cells=True)
    sub = sample_subevent(ev["hits"], ev["particles"], ev["truth"], 50, rng=1, cells=ev["cells"])
    pids = sub.truth["particle_id"].to_numpy()
    assert len(np.unique(pids)) == 50 and (pids != 0).all()
    assert set(sub.particles["particle_id"]) == set(pids)
    assert sorted(sub.hits["hit_id"]) == sorted(sub.truth["hit_id"])
    assert set(sub.cells["hit_id"]) <= set(sub.hits["hit_id"])
    assert len(sub.cells) == ev["cells"]["hit_id"].isin(sub.hits["hit_id"]).sum()
    # all hits of each drawn particle are kept, ids untouched
    full = ev["truth"]["particle_id"].value_counts()
    assert (sub.truth["particle_id"].value_counts() == full[full.index.isin(pids)]).all()
    assert sub.truth["particle_id"].dtype == np.int64
    w = sub.truth["weight"]
    assert w.sum() == pytest.approx(1.0)
    orig = ev["truth"].set_index("hit_id").loc[sub.truth["hit_id"], "weight"].to_numpy()
    assert np.allclose(w.to_numpy() * orig.sum(), orig)
    # deterministic given the rng; different seeds give different particles
    again = sample_subevent(ev["hits"], ev["particles"], ev["truth"], 50, rng=1)
    assert again.truth.equals(sub.truth) and again.cells is None
    other = sample_subevent(ev["hits"], ev["particles"], ev["truth"], 50, rng=2)
    assert set(other.truth["particle_id"]) != set(pids)


def test_sample_subevent_range_is_uniform_and_unbiased():
    ev = real_event()
    rng = np.random.default_rng(0)
    counts = []
    included = pd.Series(
        0, index=np.unique(ev["truth"]["particle_id"][ev["truth"]["particle_id"] != 0])
    )
    n_draws = 300
    for _ in range(n_draws):
        sub = sample_subevent(ev["hits"], ev["particles"], ev["truth"], (1, 4), rng=rng)
        ids = sub.particles["particle_id"].to_numpy()
        counts.append(len(np.unique(sub.truth["particle_id"])))
        included[ids] += 1
    freq = np.bincount(counts, minlength=5)[1:] / n_draws
    assert np.all(np.abs(freq - 0.25) < 0.08)  # uniform over 1..4 (4 sigma ~ 0.1)
    # particles with many hits are not favoured: inclusion independent of hit count
    nh = ev["truth"]["particle_id"].value_counts().reindex(included.index)
    assert abs(np.corrcoef(nh, included)[0, 1]) < 0.2
    assert included.sum() == sum(counts)


def test_sample_subevent_noise_and_errors():
    ev = real_event()
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    sub = sample_subevent(h, p, t, 200, rng=3, keep_noise=True)
    noise = (sub.truth["particle_id"] == 0).sum()
    share = (sub.truth["particle_id"] != 0).sum() / (t["particle_id"] != 0).sum()
    assert noise == round((t["particle_id"] == 0).sum() * share) > 0
    with pytest.raises(ValueError, match="only 468 particles"):
        sample_subevent(h, p, t, 469, rng=0)
    with pytest.raises(ValueError, match="n_particles"):
        sample_subevent(h, p, t, (5, 2), rng=0)
    with pytest.raises(ValueError, match="same hit_ids"):
        sample_subevent(h.iloc[1:], p, t, 5, rng=0)


def test_select_barrel_min_hits_real_event():
    ev = real_event(with_cells=True)
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    sub = select(h, p, t, volumes=(8, 13, 17), remove_noise=True, min_hits=6, cells=ev["cells"])
    assert set(sub.hits["volume_id"]) == {8, 13, 17}
    assert (sub.truth["particle_id"] != 0).all()
    counts = sub.truth["particle_id"].value_counts()
    assert counts.min() >= 6
    assert set(counts.index) == set(sub.particles["particle_id"])
    # every particle with >= 6 barrel hits in the full event survives
    m = t.merge(h, on="hit_id")
    barrel = m[m["volume_id"].isin([8, 13, 17]) & (m["particle_id"] != 0)]
    expected = barrel["particle_id"].value_counts()
    assert set(counts.index) == set(expected.index[expected >= 6]) and len(counts) > 50
    assert sub.truth["weight"].sum() == pytest.approx(1.0)
    assert set(sub.cells["hit_id"]) <= set(sub.hits["hit_id"])


def test_select_pt_and_noise():
    ev = real_event()
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    sub = select(h, p, t, pt_min=1.0)
    pt = np.hypot(sub.particles["px"], sub.particles["py"])
    assert (pt >= 1.0).all() and len(sub.particles) == (np.hypot(p["px"], p["py"]) >= 1).sum()
    real_pids = sub.truth["particle_id"][sub.truth["particle_id"] != 0]
    assert real_pids.isin(sub.particles["particle_id"]).all()
    assert (sub.truth["particle_id"] == 0).sum() == (t["particle_id"] == 0).sum()  # noise kept
    none = select(h, p, t)
    assert none.truth.equals(t.assign(weight=t["weight"] / t["weight"].sum()))
    assert none.hits.equals(h)
    with pytest.raises(ValueError, match="int64"):
        select(h, p, t.astype({"particle_id": "float64"}))


def test_select_on_random_event_is_consistent():
    ev = random_event(np.random.default_rng(5), n_particles=60, noise=30)
    sub = select(ev["hits"], ev["particles"], ev["truth"], volumes=[8, 13], min_hits=3, pt_min=0.5)
    m = sub.truth.merge(sub.hits, on="hit_id")
    assert len(m) == len(sub.truth) == len(sub.hits)
    assert m["volume_id"].isin([8, 13]).all()
    real = m[m["particle_id"] != 0]
    assert real["particle_id"].value_counts().min() >= 3
