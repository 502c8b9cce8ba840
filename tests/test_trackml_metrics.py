"""Tests of hepexp.metrics.trackml: hit weights, score, efficiencies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hepexp.metrics.trackml import (
    aggregate_efficiencies,
    efficiencies,
    hit_weights,
    match_particles,
    order_weight_matrix,
    pt_weight,
    score_event,
)
from hepexp.metrics.trackml_reference import (
    reference_efficiencies,
    reference_hit_weights,
    reference_score_event,
)

from .trackml_helpers import random_event, real_event

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


# ---------------------------------------------------------------- efficiencies


def _hand_event():
    """Particles 1 (5 hits, pT 2), 2 (4 hits, pT 2), 3 (3 hits, pT 0.5), 4 (4 hits, eta 5),
    3 noise hits; each hit on its own layer."""
    pid = [1] * 5 + [2] * 4 + [3] * 3 + [4] * 4 + [0, 0, 0]
    n = len(pid)
    truth = pd.DataFrame({"hit_id": np.arange(1, n + 1), "particle_id": pid})
    hits = pd.DataFrame(
        {"hit_id": np.arange(1, n + 1), "volume_id": 8, "layer_id": 2 * np.arange(1, n + 1)}
    )
    pz4 = 2.0 * np.sinh(5.0)
    particles = pd.DataFrame(
        {
            "particle_id": [1, 2, 3, 4],
            "px": [2.0, 0.0, 0.5, 2.0],
            "py": [0.0, 2.0, 0.0, 0.0],
            "pz": [1.0, -1.0, 0.0, pz4],
        }
    )
    return truth, particles, hits


def test_efficiencies_hand_example():
    truth, particles, hits = _hand_event()
    # cluster 10: all 5 hits of p1 (perfect); 11: 3 hits of p2 + 1 noise (DM, LHC exactly 75%
    # -> not LHC); 12: p2's last hit + 2 of p3 (majority p3, not selected: pT 0.5);
    # 13: 2 noise + 1 p3 (fake, noise majority); 14: p4 all hits (eta 5: not selected)
    track = [10] * 5 + [11, 11, 11, 12] + [12, 12, 13] + [14] * 4 + [11, 13, 13]
    sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": track})
    eff = efficiencies(truth, particles, sub, hits=hits)
    assert eff["n_particles"] == 2  # p1, p2
    assert eff["n_clusters"] == 2  # clusters 10, 11
    assert (eff["n_dm"], eff["n_perfect"], eff["n_lhc"]) == (2, 1, 1)
    assert eff["double_majority"] == 1.0 and eff["perfect"] == 0.5 and eff["lhc"] == 0.5
    assert eff["n_valid_clusters"] == 5 and eff["n_fake"] == 1 and eff["fake_rate"] == 0.2
    assert eff["fake_dm"] == 0.0 and eff["fake_lhc"] == 0.5
    assert eff["duplicate_rate"] == 0.0
    # lower pT cut admits p3 (its cluster 12 has 2/3 of p3 -> DM and perfect? no: 2 of 3 hits)
    eff0 = efficiencies(truth, particles, sub, hits=hits, pt_min=0.0)
    assert eff0["n_particles"] == 3 and eff0["n_dm"] == 3 and eff0["n_perfect"] == 1
    # min_layers=6 drops the 5-, 4- and 3-layer particles
    assert efficiencies(truth, particles, sub, hits=hits, min_layers=6)["n_particles"] == 0
    assert np.isnan(efficiencies(truth, particles, sub, hits=hits, min_layers=6)["perfect"])
    # min_cluster_size=5 leaves only cluster 10
    eff5 = efficiencies(truth, particles, sub, hits=hits, min_cluster_size=5)
    assert eff5["n_valid_clusters"] == 1 and eff5["n_dm"] == 1


def test_efficiencies_need_hits_for_layer_cut():
    truth, particles, hits = _hand_event()
    sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": truth["particle_id"]})
    with pytest.raises(ValueError, match="hits"):
        efficiencies(truth, particles, sub)
    assert efficiencies(truth, particles, sub, min_layers=0)["n_particles"] == 2


def test_efficiencies_real_event_perfect_and_split():
    ev = real_event()
    truth, particles, hits = ev["truth"], ev["particles"], ev["hits"]
    pid = truth["particle_id"].to_numpy()
    sub = _submission(truth, np.where(pid == 0, -1, pid))
    eff = efficiencies(truth, particles, sub, hits=hits)
    # independent count of the selected particles with pandas
    m = truth.merge(hits, on="hit_id").merge(particles, on="particle_id")
    layers = m.groupby("particle_id")[["volume_id", "layer_id"]].apply(
        lambda g: len(g.drop_duplicates())
    )
    p = particles.set_index("particle_id")
    pt = np.hypot(p["px"], p["py"])
    eta = np.arcsinh(p["pz"] / pt)
    sel = (pt >= 0.9) & (eta.abs() < 4) & (layers.reindex(p.index).fillna(0) >= 3)
    assert eff["n_particles"] == int(sel.sum()) > 20
    for key in ("double_majority", "perfect", "lhc"):
        assert eff[key] == 1.0
    assert eff["fake_rate"] == 0.0 and eff["duplicate_rate"] == 0.0
    # split every particle into halves: no perfect match, duplicates appear
    _, code = np.unique(pid, return_inverse=True)
    order = pd.Series(np.arange(len(pid))).groupby(pid).cumcount().to_numpy()
    split = _submission(truth, np.where(pid == 0, -1, code * 2 + order % 2))
    eff_s = efficiencies(truth, particles, split, hits=hits)
    assert eff_s["perfect"] == 0.0
    assert 0.0 < eff_s["double_majority"] < 1.0
    assert eff_s["duplicate_rate"] > 0.5
    ref = reference_efficiencies(truth, particles, split, hits)
    assert {k: eff_s[k] for k in ref} == ref


@pytest.mark.parametrize("seed", range(25))
def test_efficiencies_equal_reference(seed):
    rng = np.random.default_rng(100 + seed)
    ev = random_event(rng, n_particles=int(rng.integers(1, 40)), noise=int(rng.integers(0, 30)))
    truth, particles, hits = ev["truth"], ev["particles"], ev["hits"]
    if len(truth) == 0:
        return
    _, code = np.unique(truth["particle_id"].to_numpy(), return_inverse=True)
    labels = code.copy()
    u = rng.random(len(labels))
    frac = [0.01, 0.25][seed % 2]  # light corruption leaves perfect matches
    labels[u < frac] = rng.integers(-1, code.max() + 2, int((u < frac).sum()))
    sub = _submission(truth, labels)
    sub = sub[rng.random(len(sub)) > frac / 2]
    kwargs = {"pt_min": float(rng.choice([0.0, 0.9])), "min_layers": int(rng.integers(0, 4))}
    eff = efficiencies(truth, particles, sub, hits=hits, **kwargs)
    ref = reference_efficiencies(truth, particles, sub, hits, **kwargs)
    assert {k: eff[k] for k in ref} == ref
    # per-particle flags agree with the counts
    table = match_particles(truth, particles, sub, hits=hits, min_layers=kwargs["min_layers"])
    chosen = table["reconstructable"] & (table["pt"] >= kwargs["pt_min"])
    assert int(chosen.sum()) == eff["n_particles"]
    assert int((chosen & table["dm_matched"]).sum()) == eff["n_dm"]
    assert int((chosen & table["perfect_matched"]).sum()) == eff["n_perfect"]
    assert int((chosen & (table["n_matched_clusters"] > 0)).sum()) == eff["n_matched_particles"]


def test_aggregate_efficiencies_equals_concatenated_events():
    rng = np.random.default_rng(7)
    events, results = [], []
    for k in range(3):
        ev = random_event(rng, n_particles=30, noise=10)
        # make ids disjoint across events
        for name in ("truth", "hits"):
            ev[name]["hit_id"] += 10_000 * k
        ev["truth"]["particle_id"] = np.where(
            ev["truth"]["particle_id"] == 0, 0, ev["truth"]["particle_id"] + k
        )
        ev["particles"]["particle_id"] += k
        _, code = np.unique(ev["truth"]["particle_id"], return_inverse=True)
        labels = np.where(rng.random(len(code)) < 0.2, -1, code + 1000 * k)
        ev["sub"] = _submission(ev["truth"], labels)
        events.append(ev)
        results.append(
            efficiencies(ev["truth"], ev["particles"], ev["sub"], hits=ev["hits"], pt_min=0.5)
        )
    total = aggregate_efficiencies(results)
    cat = {n: pd.concat([e[n] for e in events], ignore_index=True) for n in events[0]}
    direct = efficiencies(cat["truth"], cat["particles"], cat["sub"], hits=cat["hits"], pt_min=0.5)
    assert total == pytest.approx(direct, nan_ok=True)
    assert total["n_particles"] == sum(r["n_particles"] for r in results) > 0
    with pytest.raises(ValueError, match="lacks counts"):
        aggregate_efficiencies([{"double_majority": 1.0}])


def test_match_particles_columns_real_event():
    ev = real_event()
    truth = ev["truth"]
    sub = _submission(truth, truth["particle_id"])
    table = match_particles(truth, ev["particles"], sub, hits=ev["hits"])
    assert list(table.columns[:6]) == [
        "particle_id",
        "pt",
        "eta",
        "nhits",
        "n_layers",
        "reconstructable",
    ]
    assert len(table) == 468  # particles with hits
    assert table["particle_id"].dtype == np.int64
    assert (table["nhits"] >= table["n_layers"]).all() and (table["n_layers"] >= 1).all()
    big = table["nhits"] >= 3
    assert table.loc[big, "dm_matched"].all() and table.loc[big, "perfect_matched"].all()


def test_tracking_evaluation_is_the_per_event_metrics_in_any_order() -> None:
    """TrackingEvaluation (the trackers' one evaluation path) equals the metric functions
    called event by event, whatever order the events arrive in; truth is looked up by id."""
    from hepexp.data.trackml.subevents import SubEvent
    from hepexp.reco.evaluation import TrackingEvaluation

    from .regressor_helpers import toy_event

    rng = np.random.default_rng(5)
    events = {100 + i: SubEvent(*toy_event(rng, 30, noise=5)) for i in range(4)}
    tracks = {}
    for event_id, event in events.items():  # truth tracks with every 7th hit moved elsewhere
        track = event.truth.particle_id.to_numpy().copy()
        track[::7] = rng.integers(-1, 40, len(track[::7]))
        tracks[event_id] = (event.truth.hit_id.to_numpy(), track)
    runs = []
    for order in (sorted(events), sorted(events, reverse=True)):
        tracking = TrackingEvaluation(events.__getitem__, (0.0, 1.0))
        for event_id in order:
            tracking.add(event_id, *tracks[event_id])
        runs.append(tracking.summary())
    for key, value in runs[0].items():  # equal up to the order of summation
        assert runs[1][key] == pytest.approx(value), key
    subs = {i: pd.DataFrame({"hit_id": h, "track_id": t}) for i, (h, t) in tracks.items()}
    scores = [score_event(events[i].truth, subs[i]) for i in sorted(events)]
    assert runs[0]["trackml_score"] == pytest.approx(np.mean(scores))
    assert 0.3 < runs[0]["trackml_score"] < 0.99
    for pt_min in (0.0, 1.0):
        direct = aggregate_efficiencies(
            [
                efficiencies(e.truth, e.particles, subs[i], pt_min=pt_min, hits=e.hits)
                for i, e in events.items()
            ]
        )
        for key, value in runs[0][pt_min].items():
            assert value == pytest.approx(direct[key]), (pt_min, key)
    assert len(tracking.particles()) == sum(len(e.particles) for e in events.values())
    with pytest.raises(ValueError, match="no events were added for track builder 'other'"):
        tracking.summary("other")
