"""The built-in Prometheus generator: format, truth consistency, physics, realism vs real events."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree
from scipy.stats import kstest

from hepexp.data.prometheus.io import EVENT_SCHEMA, read_config, read_events, read_geometry
from hepexp.data.prometheus.simulate import (
    C_VACUUM,
    HADRON_PDG,
    SimulationOptions,
    ensure_simulated,
    fit_light_model,
    hadron_light_factor,
    icecube_geometry,
    settings_path,
    simulate_events,
    simulate_photons,
)

from .prometheus_helpers import real_events_path, real_geo_path


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory):
    """300 events with the default settings (about 2 s)."""
    path = tmp_path_factory.mktemp("sim") / "default.parquet"
    simulate_events(path, 300, seed=7, progress=False)
    return path


def per_event_counts(events: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photons per event, hit OMs per event, photons per hit OM, time std per OM (>= 2 hits)."""
    ph = events.photons
    n_ph = ak.to_numpy(ak.num(ph.t))
    ev = np.repeat(np.arange(len(n_ph)), n_ph)
    key = (
        ev * 10**6
        + ak.to_numpy(ak.flatten(ph.string_id)) * 1000
        + ak.to_numpy(ak.flatten(ph.sensor_id))
    )
    t = ak.to_numpy(ak.flatten(ph.t))
    uniq, inv, hits = np.unique(key, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, t) / hits
    std = np.sqrt(np.clip(np.bincount(inv, t * t) / hits - mean**2, 0, None))
    return n_ph, np.bincount(uniq // 10**6, minlength=len(n_ph)), hits, std[hits >= 2]


def test_builtin_geometry_is_icecube_like():
    geo = icecube_geometry()
    assert len(geo) == 5160 and geo.string_id.nunique() == 86
    assert geo.groupby("string_id").sensor_id.apply(lambda s: sorted(s) == list(range(1, 61))).all()
    xy = geo.groupby("string_id")[["x", "y"]].first().to_numpy()
    spacing = cKDTree(xy[:78]).query(xy[:78], k=2)[0][:, 1]
    assert np.median(spacing) == pytest.approx(125.0, abs=0.5)
    z1 = geo[geo.string_id == 1].z.to_numpy()
    assert np.median(-np.diff(z1)) == pytest.approx(17.02, abs=0.01)
    deep = geo[geo.string_id == 86].z.to_numpy()
    assert np.median(-np.diff(deep[10:])) == pytest.approx(7.01, abs=0.01)
    real = read_geometry(real_geo_path())
    for col in ("x", "y", "z"):  # centroid and extent close to the real detector
        assert geo[col].mean() == pytest.approx(real[col].mean(), abs=40)
        assert np.ptp(geo[col]) == pytest.approx(np.ptp(real[col]), rel=0.1)


def test_simulated_file_has_the_real_schema(default_sim):
    real = real_events_path()
    assert pq.read_schema(default_sim).equals(pq.read_schema(real), check_metadata=False)
    ours = pq.read_schema(default_sim)
    for name in ("mc_truth", "photons"):  # field-level (awkward) metadata identical as well
        assert ours.field(name).metadata == pq.read_schema(real).field(name).metadata
    cfg = read_config(default_sim)
    sim_cfg = cfg["injection"]["hepexp.simulate"]["simulation"]
    assert sim_cfg["minimal energy"] == 1e3 and sim_cfg["power law"] == 1.0
    # the injection cylinder reproduces the real run's (hull + 200 m padding)
    real_cfg = read_config(real)["injection"]["LeptonInjector"]["simulation"]
    assert sim_cfg["cylinder radius"] == pytest.approx(real_cfg["cylinder radius"], rel=0.06)
    assert sim_cfg["cylinder height"] == pytest.approx(real_cfg["cylinder height"], rel=0.06)


def test_truth_is_consistent(default_sim):
    ev = read_events(default_sim)
    mc, ph = ev.mc_truth, ev.photons
    assert len(ev) == 300
    assert pq.read_schema(default_sim).names == EVENT_SCHEMA.names
    e = ak.to_numpy(mc.initial_state_energy)
    assert e.min() >= 1e3 and e.max() <= 1e6
    fe = ak.to_numpy(mc.final_state_energy)
    np.testing.assert_allclose(fe.sum(axis=1), e, rtol=1e-12)
    np.testing.assert_allclose(fe[:, 1], ak.to_numpy(mc.bjorken_y) * e, rtol=1e-12)
    assert (ak.to_numpy(mc.final_state_type) == [11.0, float(HADRON_PDG)]).all()
    assert (ak.to_numpy(mc.initial_state_type) == 12).all() and (
        ak.to_numpy(mc.interaction) == 1
    ).all()
    for c in "xyz":
        np.testing.assert_array_equal(
            ak.to_numpy(mc[f"final_state_{c}"])[:, 0], ak.to_numpy(mc[f"initial_state_{c}"])
        )
    # direction convention of the real file: same zenith, azimuth + pi (for the lepton, which is
    # deflected by at most a few degrees at these energies)
    dz = ak.to_numpy(mc.final_state_zenith)[:, 0] - ak.to_numpy(mc.initial_state_zenith)
    daz = ak.to_numpy(mc.final_state_azimuth)[:, 0] - ak.to_numpy(mc.initial_state_azimuth)
    assert np.percentile(np.abs(dz), 90) < 0.05
    assert np.percentile(np.abs(np.cos(daz) + 1), 90) < 0.01
    # column depth: ice density x chord through the injection cylinder, as in the real file
    cd = ak.to_numpy(mc.column_depth)
    assert 0.5e5 < np.median(cd) < 2.5e5
    # every event has photons; photon positions are those of the OM they are on
    n_ph = ak.to_numpy(ak.num(ph.t))
    assert n_ph.min() >= 1
    geo = icecube_geometry()
    flat = {f: ak.to_numpy(ak.flatten(ph[f])) for f in ph.fields}
    row = (flat["string_id"] - 1) * 60 + flat["sensor_id"] - 1  # built-in layout order
    assert (geo.string_id.to_numpy()[row] == flat["string_id"]).all()
    np.testing.assert_array_equal(flat["sensor_pos_x"], geo.x.to_numpy()[row])
    np.testing.assert_array_equal(flat["sensor_pos_z"], geo.z.to_numpy()[row])
    assert set(np.unique(flat["id_idx"])) <= {1, 2}
    # causality: no photon before the direct light (minus PMT jitter)
    vtx = np.stack([ak.to_numpy(mc[f"initial_state_{c}"]) for c in "xyz"], axis=1)
    vtx = np.repeat(vtx, n_ph, axis=0)
    d = np.linalg.norm(np.stack([flat[f"sensor_pos_{c}"] for c in "xyz"], axis=1) - vtx, axis=1)
    resid = flat["t"] - d / (C_VACUUM / 1.32)
    assert resid.min() > -6 * 2.5
    # hadron photons (id_idx 2) follow the hadronic share of the visible energy
    e_had = fe[:, 1]
    light_had = hadron_light_factor(e_had) * e_had
    expected = light_had / (light_had + fe[:, 0])
    frac = ak.to_numpy(ak.mean(ph.id_idx == 2, axis=1))
    bright = n_ph >= 200
    assert np.mean(np.abs(frac[bright] - expected[bright])) < 0.05


def test_energy_spectrum_and_directions(tmp_path):
    path = simulate_events(tmp_path / "s.parquet", 300, seed=3, progress=False, min_photons=0)
    mc = read_events(path, columns=["mc_truth"]).mc_truth
    u = np.log(ak.to_numpy(mc.initial_state_energy) / 1e3) / np.log(1e3)
    assert kstest(u, "uniform").pvalue > 1e-3  # E^-1 = log-uniform over 1 TeV-1 PeV
    assert kstest((np.cos(ak.to_numpy(mc.initial_state_zenith)) + 1) / 2, "uniform").pvalue > 1e-3
    az = ak.to_numpy(mc.initial_state_azimuth)
    assert az.min() > -np.pi and az.max() <= np.pi
    steep = simulate_events(
        tmp_path / "g2.parquet", 200, seed=3, progress=False, min_photons=0, spectral_index=2.0
    )
    e2 = ak.to_numpy(read_events(steep, columns=["mc_truth"]).mc_truth.initial_state_energy)
    # E^-2 between 1e3 and 1e6: median = 2e3 GeV
    assert np.median(e2) == pytest.approx(2e3, rel=0.2)


def test_seed_determinism_and_ensure_simulated(tmp_path):
    a = simulate_events(tmp_path / "a.parquet", 20, seed=5, progress=False)
    b = simulate_events(tmp_path / "b.parquet", 20, seed=5, progress=False)
    c = simulate_events(tmp_path / "c.parquet", 20, seed=6, progress=False)
    assert ak.array_equal(read_events(a), read_events(b))
    assert not ak.array_equal(read_events(a), read_events(c))
    side = json.loads(settings_path(a).read_text())
    assert side["settings"]["seed"] == 5 and side["stats"]["n_generated"] >= 20

    out = tmp_path / "e.parquet"
    ensure_simulated(out, 20, seed=5, progress=False)
    first = out.stat().st_mtime_ns
    ensure_simulated(out, 20, seed=5, progress=False)
    assert out.stat().st_mtime_ns == first  # reused
    ensure_simulated(out, 20, seed=5, progress=False, jitter_ns=1.0)
    assert out.stat().st_mtime_ns != first  # settings changed -> re-simulated
    assert json.loads(settings_path(out).read_text())["settings"]["options"]["jitter_ns"] == 1.0
    assert ak.array_equal(read_events(a).mc_truth, read_events(out).mc_truth)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("e.")) == [
        "e.json",
        "e.parquet",
    ]


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="unknown simulation option 'energy_maximum'"):
        simulate_events(tmp_path / "x.parquet", 5, energy_maximum=1e5)
    with pytest.raises(ValueError, match="unknown interaction 'nutau_cc'"):
        SimulationOptions(interactions={"nutau_cc": 1.0})
    with pytest.raises(ValueError, match="attenuation_lengths"):
        SimulationOptions(attenuation_lengths=(50.0,))
    assert not (tmp_path / "x.parquet").exists()


def test_fit_recovers_simulated_light_model(tmp_path):
    truth = {
        "yield_norm": 40.0,
        "attenuation_lengths": (30.0, 45.0, 60.0),
        "pandel_lambda": 60.0,
        "pandel_scale": 400.0,
    }
    path = simulate_events(
        tmp_path / "f.parquet", 150, seed=11, progress=False, jitter_ns=0.0, energy_min=1e4, **truth
    )
    fit = fit_light_model(read_events(path))
    assert fit["yield_norm"] == pytest.approx(40.0, rel=0.1)
    np.testing.assert_allclose(fit["attenuation_lengths"][1:], [45.0, 60.0], rtol=0.1)
    assert fit["pandel_lambda"] == pytest.approx(60.0, rel=0.1)
    assert fit["pandel_scale"] == pytest.approx(400.0, rel=0.1)


def test_muon_track_light_follows_the_track():
    """A 100 TeV muon going straight down next to string 36: first hits move down at ~c."""
    geo = icecube_geometry()
    s36 = geo[geo.string_id == 36].iloc[0]
    x0, y0, z0 = s36.x + 20.0, s36.y, -1300.0
    mc = ak.Array(
        [
            {
                "interaction": 1,
                "initial_state_energy": 1e5,
                "initial_state_type": 14,
                "initial_state_zenith": np.pi,
                "initial_state_azimuth": np.pi,
                "initial_state_x": x0,
                "initial_state_y": y0,
                "initial_state_z": z0,
                "final_state_energy": [9.9e4, 1e3],
                "final_state_type": [13.0, float(HADRON_PDG)],
                "final_state_zenith": [np.pi, np.pi],
                "final_state_azimuth": [0.0, 0.0],
                "final_state_x": [x0, x0],
                "final_state_y": [y0, y0],
                "final_state_z": [z0, z0],
                "final_state_parent": [0.0, 0.0],
                "bjorken_x": 0.1,
                "bjorken_y": 0.01,
                "column_depth": 1e5,
            }
        ]
    )
    ev = simulate_photons(mc, seed=0, geometry=geo)
    ph = ev.photons[0]
    on36 = ak.to_numpy(ph.string_id) == 36
    assert on36.sum() > 1000 and np.all(ak.to_numpy(ph.id_idx)[on36] >= 1)
    z = ak.to_numpy(ph.sensor_pos_z)[on36]
    t = ak.to_numpy(ph.t)[on36]
    zs = np.unique(z)
    assert len(zs) == 60  # every OM of the string sees the muon
    first = np.array([t[z == v].min() for v in zs])
    slope = np.polyfit(-zs, first, 1)[0]  # ns per metre of depth
    assert slope == pytest.approx(1 / C_VACUUM, rel=0.1)


def test_dark_noise_rate(tmp_path):
    path = simulate_events(tmp_path / "n.parquet", 60, seed=2, progress=False, noise_rate_hz=500.0)
    ph = read_events(path, columns=["photons"]).photons
    noise = ak.sum(ph.id_idx == 0, axis=1)
    expected = 500.0 * 1e-9 * 10_000.0 * 5160  # rate x window x OMs = 25.8 per event
    assert ak.mean(noise) == pytest.approx(expected, rel=0.15)
    t_noise = ak.to_numpy(ak.flatten(ph.t[ph.id_idx == 0]))
    assert t_noise.min() >= 0 and t_noise.max() <= 10_000.0


def test_simulator_lands_in_the_ballpark_of_real_events(default_sim):
    """Tolerances: population KS p > 0.01 (photons and hit OMs per event, 300 sim vs 10 real);
    real truth re-simulated 5x: total photons within 15%, hit OMs per event within a factor 1.8
    (events with >= 10 real hit OMs), median photons per hit OM within a factor 1.5, median
    per-OM time std within 15%."""
    real = read_events(real_events_path())
    r_ph, r_om, r_hits, r_std = per_event_counts(real)
    s_ph, s_om, _, _ = per_event_counts(read_events(default_sim))
    from scipy.stats import ks_2samp

    assert ks_2samp(r_ph, s_ph).pvalue > 0.01
    assert ks_2samp(r_om, s_om).pvalue > 0.01
    reps = 5
    matched = simulate_photons(
        ak.concatenate([real.mc_truth] * reps), seed=1, geometry=real_geo_path()
    )
    m_ph, m_om, m_hits, m_std = per_event_counts(matched)
    assert m_ph.sum() / reps == pytest.approx(r_ph.sum(), rel=0.15)
    med_om = np.median(m_om.reshape(reps, -1), axis=0)
    big = r_om >= 10
    assert np.all(np.abs(np.log(med_om[big] / r_om[big])) < np.log(1.8))
    assert np.median(m_hits) / np.median(r_hits) == pytest.approx(1.0, abs=0.5)
    assert np.median(m_std) == pytest.approx(np.median(r_std), rel=0.15)
