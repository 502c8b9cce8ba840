"""Tests of the TrackML event simulator: invariants, format, datasets, realism vs the real event."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hepexp.data.cache import SETTINGS_FILE
from hepexp.data.trackml.geometry import trackml_geometry
from hepexp.data.trackml.io import COLUMNS, load_dataset, load_event
from hepexp.data.trackml.simulate import (
    C_LIGHT,
    SimulationConfig,
    decode_particle_id,
    encode_particle_id,
    ensure_simulated,
    field_strength,
    simulate_event,
)

from .conftest import SHARED, require

REAL_PREFIX = SHARED / "data" / "trackml" / "event000000001"
NO_MATERIAL = {"multiple_scattering": False, "energy_loss": False, "hadronic_interactions": False}


@pytest.fixture(scope="module")
def event():
    return simulate_event(400, seed=11)


@pytest.fixture(scope="module")
def clean_event():
    """No material effects, no smearing: pure helices."""
    return simulate_event(300, seed=5, smear=False, **NO_MATERIAL)


@pytest.fixture(scope="module")
def modules():
    return trackml_geometry().modules().set_index(["volume_id", "layer_id", "module_id"])


def merged(ev) -> pd.DataFrame:
    hits, _, particles, truth = ev
    d = hits.merge(truth, on="hit_id")
    return d.merge(particles, on="particle_id", how="left")


# ---------------------------------------------------------------- format and bookkeeping


def test_frames_have_official_columns_and_dtypes(event):
    for frame, part in zip(event, ("hits", "cells", "particles", "truth"), strict=True):
        assert list(frame.columns) == list(COLUMNS[part]), part
        for column, kind in COLUMNS[part].items():
            assert frame[column].dtype == (np.int64 if kind == "i" else np.float64), column
        assert np.isfinite(frame.select_dtypes("float").to_numpy()).all()
    hits, cells, particles, truth = event
    assert hits["hit_id"].tolist() == list(range(1, len(hits) + 1))
    assert truth["hit_id"].tolist() == hits["hit_id"].tolist()
    assert particles["particle_id"].is_unique and (particles["particle_id"] > 0).all()
    assert set(cells["hit_id"]) == set(hits["hit_id"])  # every hit has cells
    # hits are sorted like the real files: by volume, layer, module
    key = hits[["volume_id", "layer_id", "module_id"]].to_numpy()
    assert (np.diff(key[:, 0] * 10**8 + key[:, 1] * 10**5 + key[:, 2]) >= 0).all()


def test_deterministic_given_seed():
    a = simulate_event(60, seed=3)
    b = simulate_event(60, seed=3)
    c = simulate_event(60, seed=4)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert not a[0][["x", "y", "z"]].equals(c[0][["x", "y", "z"]])


def test_nhits_weights_and_noise(event):
    hits, _, particles, truth = event
    counts = truth.loc[truth.particle_id != 0, "particle_id"].value_counts()
    nhits = particles.set_index("particle_id")["nhits"]
    assert (nhits.reindex(counts.index) == counts).all()
    assert (nhits.drop(counts.index) == 0).all()
    assert truth["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    gen = decode_particle_id(truth["particle_id"].to_numpy())["generation"]
    noise = truth["particle_id"].to_numpy() == 0
    assert (truth["weight"][noise | (gen > 0)] == 0).all()
    assert (truth["weight"][~noise & (gen == 0)] >= 0).all()
    assert 0.10 < noise.mean() < 0.20
    # noise truth: own position, zero momentum
    nz = truth[noise].merge(hits, on="hit_id")
    np.testing.assert_allclose(nz[["tx", "ty", "tz"]].to_numpy(), nz[["x", "y", "z"]].to_numpy())
    assert (nz[["tpx", "tpy", "tpz"]].to_numpy() == 0).all()


def test_particle_id_bit_fields(event):
    _, _, particles, _ = event
    f = decode_particle_id(particles["particle_id"].to_numpy())
    pid = encode_particle_id(
        f["vertex_id"], f["primary_id"], f["generation"], f["secondary_id"], f["process"]
    )
    assert np.array_equal(pid, particles["particle_id"].to_numpy())
    prim = f["generation"] == 0
    assert prim.sum() == 400
    assert (f["process"][prim] == 0).all() and (f["secondary_id"][prim] == 0).all()
    assert (f["vertex_id"] >= 1).all() and (f["primary_id"] >= 1).all()
    assert len(np.unique(f["vertex_id"][prim])) == 8  # 400 primaries / 50 per vertex
    sec = ~prim
    assert sec.sum() > 20 and (f["secondary_id"][sec] >= 1).all()
    assert (f["process"][sec] == 2).all()
    # every secondary descends from a primary of the event
    primaries = set(zip(f["vertex_id"][prim], f["primary_id"][prim], strict=True))
    assert set(zip(f["vertex_id"][sec], f["primary_id"][sec], strict=True)) <= primaries
    # primaries of one vertex share its position
    vert = particles[prim].assign(v=f["vertex_id"][prim])
    r = np.hypot(vert.vx, vert.vy)
    prompt = vert[r < 0.2]
    assert (prompt.groupby("v")["vz"].nunique() == 1).all()
    # bit 63: vertex ids >= 2048 round-trip through int64
    big = encode_particle_id([4095], [65535], [4095], [4095], [4095])
    assert big[0] == -1 and decode_particle_id(big)["vertex_id"][0] == 4095
    with pytest.raises(ValueError, match="bit 52"):
        encode_particle_id([4096], [1], [0], [0], [0])


def test_species_and_charge(event):
    _, _, particles, _ = event
    pdg = particles["particle_type"].to_numpy()
    q = particles["q"].to_numpy()
    expected = np.where(np.isin(np.abs(pdg), [11, 13]), -np.sign(pdg), np.sign(pdg))
    assert np.array_equal(q, expected)
    prim = decode_particle_id(particles["particle_id"].to_numpy())["generation"] == 0
    share = pd.Series(np.abs(pdg[prim])).value_counts(normalize=True)
    assert share[211] > 0.75 and 0.03 < share[321] < 0.16 and 0.01 < share[2212] < 0.10
    pt = np.hypot(particles.px, particles.py)
    assert (pt >= 0.1).all()


# ---------------------------------------------------------------- geometry of the hits


def test_hits_lie_on_their_modules_and_layers(event, modules):
    hits, _, _, truth = event
    d = hits.merge(truth, on="hit_id")
    m = modules.loc[list(zip(d.volume_id, d.layer_id, d.module_id, strict=True))].reset_index()
    c = m[["cx", "cy", "cz"]].to_numpy()
    w = m[["rot_xw", "rot_yw", "rot_zw"]].to_numpy()
    u = m[["rot_xu", "rot_yu", "rot_zu"]].to_numpy()
    v = m[["rot_xv", "rot_yv", "rot_zv"]].to_numpy()
    for cols in (["x", "y", "z"], ["tx", "ty", "tz"]):
        p = d[cols].to_numpy() - c
        assert np.abs(np.sum(p * w, axis=1)).max() < 1e-6  # on the module mid-plane
        lv = np.sum(p * v, axis=1)
        hv = m["module_hv"].to_numpy()
        half_u = m.module_minhu + (m.module_maxhu - m.module_minhu) * (lv + hv) / (2 * hv)
        assert (np.abs(lv) <= hv + 1e-9).all()
        assert (np.abs(np.sum(p * u, axis=1)) <= half_u.to_numpy() + 1e-9).all()
    # on the layer: barrel radius / disk z of the geometry table
    layers = trackml_geometry().layer_table().set_index(["volume_id", "layer_id"])
    lay = layers.loc[list(zip(d.volume_id, d.layer_id, strict=True))].reset_index(drop=True)
    r = np.hypot(d.x, d.y).to_numpy()
    barrel = (lay["kind"] == "barrel").to_numpy()
    assert ((r >= lay.r_min - 1e-6) & (r <= lay.r_max + 1e-6)).all()
    # tilted / staggered modules: within a few mm of the nominal radius
    assert (np.abs(r - lay.r)[barrel] < 2.5 + 0.02 * lay.r[barrel]).all()
    assert (np.abs(d.z - lay.z)[~barrel] <= 6.0).all()
    # measured vs true: pitch / sqrt(12) resolution, in the module plane
    res = np.linalg.norm(d[["x", "y", "z"]].to_numpy() - d[["tx", "ty", "tz"]].to_numpy(), axis=1)
    signal = (d.particle_id != 0).to_numpy()
    pix = d.volume_id.isin([7, 8, 9]).to_numpy() & signal
    assert 0.005 < np.median(res[pix]) < 0.03
    assert 1.0 < np.median(res[d.volume_id.isin([16, 17, 18]).to_numpy() & signal]) < 5.0


def test_overlapping_modules_give_double_hits(event):
    d = merged(event)
    d = d[d.particle_id != 0]
    per_layer = d.groupby(["particle_id", "volume_id", "layer_id"]).size()
    assert 0.15 < (per_layer >= 2).mean() < 0.45  # real event: 28%
    # two hits of a particle in one layer are on different modules
    dup = d.groupby(["particle_id", "volume_id", "layer_id", "module_id"]).size()
    assert (dup == 1).mean() > 0.99


def test_cells(event, modules):
    hits, cells, _, _ = event
    d = cells.merge(hits[["hit_id", "volume_id", "layer_id", "module_id"]], on="hit_id")
    m = modules.loc[list(zip(d.volume_id, d.layer_id, d.module_id, strict=True))].reset_index()
    n_u = np.round(2 * m.module_maxhu / m.pitch_u).to_numpy()
    n_v = np.round(2 * m.module_hv / m.pitch_v).to_numpy()
    assert ((d.ch0 >= 0) & (d.ch0 < n_u) & (d.ch1 >= 0) & (d.ch1 < n_v)).all()
    strip = ~d.volume_id.isin([7, 8, 9])
    assert (d.value[strip] == 1).all()
    assert ((d.value[~strip] > 0) & (d.value[~strip] < 1)).all()
    assert not cells.duplicated(["hit_id", "ch0", "ch1"]).any()
    size = cells.groupby("hit_id").size()
    assert size.max() <= 28
    vol = hits.set_index("hit_id").volume_id
    assert 3 < size[vol[vol == 8].index].mean() < 12  # long clusters in the pixel barrel
    assert 1 <= size[vol[vol == 9].index].mean() < 2.5


# ---------------------------------------------------------------- physics of the helices


def test_helix_consistency_without_material(clean_event):
    """Truth positions lie on the particle's helix; pT is conserved; charge sign matches the
    curvature direction."""
    d = merged(clean_event)
    d = d[d.particle_id != 0]
    pt = np.hypot(d.px, d.py).to_numpy()
    np.testing.assert_allclose(np.hypot(d.tpx, d.tpy), pt, rtol=1e-9)
    np.testing.assert_allclose(d.tpz, d.pz, rtol=1e-9)
    kappa = -d.q.to_numpy() * 2.0 * C_LIGHT / pt
    phi0 = np.arctan2(d.py, d.px).to_numpy()
    cx = d.vx.to_numpy() - np.sin(phi0) / kappa
    cy = d.vy.to_numpy() + np.cos(phi0) / kappa
    radius = np.hypot(d.tx - cx, d.ty - cy)
    np.testing.assert_allclose(radius, 1 / np.abs(kappa), rtol=1e-9)
    # turning angle at the hit from the momentum direction; path length from it gives z
    phi = np.arctan2(d.tpy, d.tpx).to_numpy()
    turn = np.mod(np.sign(kappa) * (phi - phi0), 2 * np.pi)
    assert turn.max() <= np.pi + 1e-9  # loopers stop after half a turn
    s = turn / np.abs(kappa)
    np.testing.assert_allclose(d.tz, d.vz + s * d.pz / pt, atol=1e-6)
    # charge sign vs bending: positive particles turn clockwise in +Bz
    d = d.assign(dist=np.hypot(d.tx - d.vx, d.ty - d.vy)).sort_values(["particle_id", "dist"])
    g = d.groupby("particle_id")
    last, first = g.tail(1).set_index("particle_id"), g.head(1).set_index("particle_id")
    cross = first.tpx * last.tpy - first.tpy * last.tpx
    bent = np.abs(cross) > 1e-6
    assert bent.sum() > 100
    assert (np.sign(cross[bent]) == -first.q[bent]).all()


def test_material_changes_momentum_and_direction(event):
    d = merged(event)
    d = d[(d.particle_id != 0)]
    gen = decode_particle_id(d.particle_id.to_numpy())["generation"]
    d = d[gen == 0]
    p_hit = np.sqrt(d.tpx**2 + d.tpy**2 + d.tpz**2)
    p0 = np.sqrt(d.px**2 + d.py**2 + d.pz**2)
    loss = (p0 - p_hit) / p0
    assert (loss > -1e-9).all()  # energy loss only decreases p
    assert 1e-4 < np.median(loss) < 0.05
    # polar angle no longer constant along the track (multiple scattering)
    theta_hit = np.arctan2(np.hypot(d.tpx, d.tpy), d.tpz)
    theta0 = np.arctan2(np.hypot(d.px, d.py), d.pz)
    assert np.median(np.abs(theta_hit - theta0)) > 1e-4


def test_falling_field_bends_more_at_large_z():
    cfg = SimulationConfig(field="falling")
    b = field_strength(np.array([0.0, 500.0, 1250.0, 1750.0, 2950.0]), cfg)
    assert b[0] == b[1] == 2.0 and b[2] == pytest.approx(1.65) and b[3] == pytest.approx(1.1)
    uni = simulate_event(200, seed=9, smear=False, **NO_MATERIAL)
    fall = simulate_event(200, seed=9, smear=False, field="falling", **NO_MATERIAL)
    pu, pf = merged(uni), merged(fall)
    np.testing.assert_allclose(
        np.hypot(pf.tpx, pf.tpy)[pf.particle_id != 0],
        np.hypot(pf.px, pf.py)[pf.particle_id != 0],
        rtol=1e-9,
    )
    # central hits identical, forward hits moved
    key = ["particle_id", "volume_id", "layer_id", "module_id"]
    both = pu[pu.particle_id != 0].merge(pf, on=key, suffixes=("_u", "_f"))
    central = both.tz_u.abs() < 600
    assert np.allclose(both.tx_u[central], both.tx_f[central])
    assert not np.allclose(both.tx_u[~central], both.tx_f[~central])


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown simulation option.*fieldd"):
        simulate_event(10, 0, fieldd="uniform")
    with pytest.raises(ValueError, match="field"):
        simulate_event(10, 0, field="dipole")
    with pytest.raises(ValueError, match="noise_fraction"):
        SimulationConfig(noise_fraction=1.5)
    hits, cells, particles, truth = simulate_event(0, 0)
    assert len(particles) == 0 and len(hits) == 0 and len(cells) == 0


# ---------------------------------------------------------------- datasets


def test_ensure_simulated_writes_reuses_and_regenerates(tmp_path):
    out = tmp_path / "trackml_sim"
    path = ensure_simulated(out, n_events=2, n_particles=30, seed=1, progress=False)
    assert path == out
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["n_events"] == 2 and settings["options"]["field"] == "uniform"
    events = list(load_dataset(out))
    assert [e[0] for e in events] == [1, 2]
    direct = simulate_event(30, [1, 0])
    for loaded, frame in zip(events[0][1:], direct, strict=True):
        np.testing.assert_array_equal(loaded.select_dtypes("int"), frame.select_dtypes("int"))
        np.testing.assert_allclose(
            loaded.select_dtypes("float"), frame.select_dtypes("float"), rtol=1e-9, atol=1e-12
        )
    stamp = (out / "event000000001-hits.csv").stat().st_mtime_ns
    ensure_simulated(out, n_events=2, n_particles=30, seed=1, progress=False)
    assert (out / "event000000001-hits.csv").stat().st_mtime_ns == stamp  # reused
    ensure_simulated(out, n_events=1, n_particles=30, seed=1, progress=False, noise_fraction=0.1)
    assert sorted(p.name for p in out.iterdir())[-1] == SETTINGS_FILE
    assert len(list(out.glob("event*-hits.csv"))) == 1  # regenerated, old events gone
    assert json.loads((out / SETTINGS_FILE).read_text())["options"]["noise_fraction"] == 0.1
    (out / "event000000001-truth.csv").unlink()  # incomplete -> regenerated
    ensure_simulated(out, n_events=1, n_particles=30, seed=1, progress=False, noise_fraction=0.1)
    assert (out / "event000000001-truth.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- realism vs the real event


def test_realism_against_real_event():
    """Simulated events of the real subsample's size agree with it (averaged over seeds)."""
    hits = Path(f"{REAL_PREFIX}-hits.csv.gz")
    require(hits.exists(), f"real TrackML event absent: {hits}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from trackml_realism import event_stats, simulate_stats
    finally:
        sys.path.pop(0)
    real = event_stats(*load_event(REAL_PREFIX))
    sim, _ = simulate_stats(list(range(6)))
    for v in (7, 8, 9, 12, 13, 14, 16, 17, 18):
        assert abs(sim[f"vol {v} %"] - real[f"vol {v} %"]) < 2.5, v  # percentage points
    assert abs(sim["noise %"] - 15.0) < 3.0
    assert (
        abs(sim["median hits/particle (with hits)"] - real["median hits/particle (with hits)"]) <= 2
    )
    assert abs(sim["no-hit particles %"] - real["no-hit particles %"]) < 5.0
    assert abs(sim["primaries %"] - real["primaries %"]) < 5.0
    assert abs(sim["median pT (GeV)"] / real["median pT (GeV)"] - 1) < 0.2
    assert abs(sim["pT > 1 GeV %"] - real["pT > 1 GeV %"]) < 4.0
    assert abs(sim["abs(eta) > 2 %"] - real["abs(eta) > 2 %"]) < 6.0
    assert abs(sim["particles"] / real["particles"] - 1) < 0.1
    for v in (8, 13):
        assert abs(sim[f"MS width vol {v}"] / real[f"MS width vol {v}"] - 1) < 0.15
    assert np.abs(sim["nhits_hist"] - real["nhits_hist"]).max() < 0.05
    assert np.abs(sim["eta_hist"] - real["eta_hist"]).max() < 0.04
