"""Tests of hepexp.data.trackml.subevents and hepexp.data.trackml.views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hepexp.data.trackml.subevents import sample_subevent, select
from hepexp.data.trackml.views import (
    edge_truth,
    event_hits,
    node_features,
    same_particle_edges,
    single_hits,
    track_hits,
    truth_graph,
)

from .trackml_helpers import random_event, real_event

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


# ---------------------------------------------------------------- views


def test_event_hits_real_event():
    ev = real_event()
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    out = event_hits(h, p, t)
    n = len(h)
    assert out["x"].shape == (n, 3) and out["x"].dtype == np.float32
    assert out["targets"].shape == (n, 4) and out["targets"].dtype == np.float32
    for k in ("particle_id", "hit_id", "volume_id", "layer_id"):
        assert out[k].shape == (n,) and out[k].dtype == np.int64
    assert np.allclose(out["x"], h[["x", "y", "z"]].to_numpy(), atol=1e-3)
    noise = out["particle_id"] == 0
    assert noise.sum() == (t["particle_id"] == 0).sum()
    assert np.all(out["targets"][noise] == 0)
    tg = out["targets"][~noise]
    assert np.all((tg[:, 0] >= 0) & (tg[:, 0] <= np.pi))
    assert np.allclose(tg[:, 1] ** 2 + tg[:, 2] ** 2, 1, atol=1e-5)
    assert set(np.unique(tg[:, 3])) == {-1.0, 1.0}
    # from the particle's true momentum, not the per-hit tpx
    m = h[["hit_id"]].merge(t, on="hit_id", how="left").merge(p, on="particle_id", how="left")
    real = m["particle_id"].to_numpy() != 0
    mom = m.loc[real, ["px", "py", "pz"]].to_numpy()
    theta = np.arccos(mom[:, 2] / np.linalg.norm(mom, axis=1))
    phi = np.arctan2(mom[:, 1], mom[:, 0])
    assert np.allclose(tg[:, 0], theta, atol=1e-6)
    assert np.allclose(tg[:, 1], np.sin(phi), atol=1e-6)
    assert np.allclose(tg[:, 2], np.cos(phi), atol=1e-6)
    # rows follow hits even if truth is shuffled
    shuffled = event_hits(h, p, t.sample(frac=1.0, random_state=0))
    assert np.array_equal(shuffled["targets"], out["targets"])


def test_track_hits_barrel_real_event():
    ev = real_event()
    barrel = select(
        ev["hits"], ev["particles"], ev["truth"], volumes=(8, 13, 17), remove_noise=True
    )
    out = track_hits(barrel.hits, barrel.truth, barrel.particles)
    counts = barrel.truth["particle_id"].value_counts()
    expected = np.sort(counts.index[counts >= 6].to_numpy())
    assert np.array_equal(out["particle_id"], expected) and len(expected) > 50
    T = len(expected)
    assert out["x"].shape == (T, 32, 3) and out["x"].dtype == np.float32
    for k in ("mask", "hit_id", "volume_id", "layer_id"):
        assert out[k].shape == (T, 32)
    assert out["mask"].dtype == bool and out["hit_id"].dtype == np.int64
    assert np.array_equal(out["lengths"], counts[expected].to_numpy())
    assert np.array_equal(out["mask"].sum(axis=1), out["lengths"])
    assert np.all(out["hit_id"][~out["mask"]] == -1) and np.all(out["x"][~out["mask"]] == 0)
    assert set(np.unique(out["volume_id"][out["mask"]])) == {8, 13, 17}
    # positions: hits' coordinates / 200, increasing distance from the origin
    xyz = barrel.hits.set_index("hit_id").loc[out["hit_id"][out["mask"]], ["x", "y", "z"]]
    assert np.allclose(out["x"][out["mask"]] * 200.0, xyz.to_numpy(), atol=1e-3)
    r = np.linalg.norm(out["x"], axis=2)
    inc = np.diff(r, axis=1) >= 0
    assert np.all(inc | ~out["mask"][:, 1:])
    # track hits belong to their particle
    pid_of = barrel.truth.set_index("hit_id")["particle_id"]
    rows = np.repeat(out["particle_id"], out["lengths"])
    assert np.array_equal(pid_of.loc[out["hit_id"][out["mask"]]].to_numpy(), rows)
    assert np.all(out["pt"] > 0) and out["pt"].dtype == np.float32
    assert set(np.unique(out["q"])) <= {-1.0, 1.0}


def test_track_hits_truncation():
    ev = real_event()
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    full = track_hits(h, t, p, max_len=32, min_hits=6)
    short = track_hits(h, t, p, max_len=4, min_hits=6, scale=1.0)
    assert np.array_equal(short["particle_id"], full["particle_id"])
    assert (full["particle_id"] != 0).all() and len(full["particle_id"]) > 200  # no noise track
    assert np.all(short["lengths"] == 4) and np.array_equal(short["n_hits"], full["n_hits"])
    assert np.array_equal(short["hit_id"], full["hit_id"][:, :4])  # the 4 nearest the origin
    assert np.allclose(short["x"], full["x"][:, :4] * 200.0, atol=1e-3)
    with pytest.raises(ValueError, match="max_len"):
        track_hits(h, t, p, max_len=0)


def test_single_hits():
    ev = real_event()
    h = ev["hits"]
    out = single_hits(h, scale=100.0, truth=ev["truth"])
    assert out["x"].shape == (len(h), 3) and out["x"].dtype == np.float32
    assert np.allclose(out["x"] * 100.0, h[["x", "y", "z"]].to_numpy(), atol=1e-3)
    assert np.array_equal(out["hit_id"], h["hit_id"].to_numpy())
    assert (out["particle_id"] == 0).sum() == (ev["truth"]["particle_id"] == 0).sum()
    assert "particle_id" not in single_hits(h)


def test_truth_graph_real_event():
    ev = real_event()
    h, p, t = ev["hits"], ev["particles"], ev["truth"]
    edges = truth_graph(h, t, p)
    counts = t["particle_id"][t["particle_id"] != 0].value_counts()
    assert edges.shape == (2, int((counts - 1).sum())) and edges.dtype == np.int64
    pid = h[["hit_id"]].merge(t, on="hit_id", how="left")["particle_id"].to_numpy()
    assert np.all(pid[edges[0]] == pid[edges[1]]) and np.all(pid[edges[0]] != 0)
    # a path per particle: no hit has two successors or two predecessors
    assert len(np.unique(edges[0])) == edges.shape[1] == len(np.unique(edges[1]))
    # distance from the production vertex grows along each edge
    vtx = p.set_index("particle_id").loc[pid[edges[0]], ["vx", "vy", "vz"]].to_numpy()
    xyz = h[["x", "y", "z"]].to_numpy()
    d0 = np.linalg.norm(xyz[edges[0]] - vtx, axis=1)
    d1 = np.linalg.norm(xyz[edges[1]] - vtx, axis=1)
    assert np.all(d1 >= d0)


def test_node_features_and_edge_truth():
    ev = real_event(with_cells=True)
    h, p, t, c = ev["hits"], ev["particles"], ev["truth"], ev["cells"]
    f = node_features(h)
    assert f.shape == (len(h), 3) and f.dtype == np.float32
    r = np.hypot(h["x"], h["y"]).to_numpy()
    assert np.allclose(f[:, 0], r / 1000, atol=1e-6) and np.all(np.abs(f[:, 1]) <= 1)
    fc = node_features(h, cells=c)
    assert fc.shape == (len(h), 5) and np.array_equal(fc[:, :3], f)
    assert fc[:, 3].sum() == len(c) and np.all(fc[:, 3] >= 1)
    assert fc[:, 4].sum() == pytest.approx(c["value"].sum(), rel=1e-5)

    true = truth_graph(h, t, p)
    assert edge_truth(true, h, t, p).all() and edge_truth(true[::-1], h, t, p).all()
    # skip-one edges along a particle: same particle, not consecutive
    pid = h[["hit_id"]].merge(t, on="hit_id", how="left")["particle_id"].to_numpy()
    nxt = dict(zip(true[0], true[1], strict=True))
    skip = np.array([[a, nxt[b]] for a, b in true.T if b in nxt]).T
    assert skip.shape[1] > 100
    assert same_particle_edges(skip, h, t).all() and not edge_truth(skip, h, t, p).any()
    # random edges: edge_truth implies same_particle; noise never true
    rng = np.random.default_rng(0)
    rand = rng.integers(0, len(h), (2, 20000))
    rand = np.concatenate([rand, true[:, :50]], axis=1)
    et, sp = edge_truth(rand, h, t, p), same_particle_edges(rand, h, t)
    assert np.all(sp[et]) and et.sum() >= 50 and sp.sum() > et.sum()
    assert not sp[(pid[rand[0]] == 0)].any()
    with pytest.raises(ValueError, match="edges"):
        edge_truth(np.zeros((3, 2), dtype=int), h, t, p)
