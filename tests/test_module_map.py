"""Module map: fitted pairs hold their training truth edges, the vectorised application equals
a naive loop, the unseen-module fallback, state round trip, input errors, the real event."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hepexp.data.trackml.datamodule import _graph_record
from hepexp.data.trackml.simulate import simulate_event
from hepexp.data.trackml.subevents import SubEvent
from hepexp.reco.graph_building import (
    EDGE_FEATURES,
    cylindrical,
    edge_geometry,
    edge_metrics,
    orient_and_unique,
)
from hepexp.reco.module_map import CUT_FEATURES, ModuleMap, _group_quantiles, module_key

from .trackml_helpers import real_event

COLS = ("x", "volume_id", "layer_id", "module_id")


def _record(n_particles: int, seed: int) -> dict[str, np.ndarray]:
    hits, _, particles, truth = simulate_event(n_particles, [seed, 0])
    rec = _graph_record(SubEvent(hits, particles, truth, None), {})
    nodes = dict(rec["nodes"])
    nodes["truth_edges"] = rec["truth_edges"]["edge"].T
    return nodes


def _tensors(record: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in record.items()}


@pytest.fixture(scope="module")
def train() -> list[dict[str, np.ndarray]]:
    return [_record(150, 100 + i) for i in range(6)]


@pytest.fixture(scope="module")
def fitted(train: list[dict]) -> ModuleMap:
    return ModuleMap(pt_min=0.5).fit(train)


def _naive(mm: ModuleMap, ev: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference: a loop over the map's pairs, every hit pair of the two modules cut."""
    key = module_key(ev["volume_id"], ev["layer_id"], ev["module_id"])
    cyl = cylindrical(ev["x"].double())
    cols = [EDGE_FEATURES.index(f) for f in CUT_FEATURES]
    found = []
    for p, (ma, mb) in enumerate(mm.pairs.tolist()):
        a = torch.nonzero(key == mm.module_keys[ma]).squeeze(1)
        b = torch.nonzero(key == mm.module_keys[mb]).squeeze(1)
        if len(a) == 0 or len(b) == 0:
            continue
        aa, bb = a.repeat_interleave(len(b)), b.repeat(len(a))
        f = edge_geometry(cyl, aa, bb)[:, cols].float()
        ok = ((f >= mm.lo[p]) & (f <= mm.hi[p]) | f.isnan()).all(1)
        found.append(torch.stack([aa[ok], bb[ok]]))
    return orient_and_unique(torch.cat(found, 1), ev["x"])


def test_map_keeps_the_truth_edges_of_its_training_events(
    train: list[dict], fitted: ModuleMap
) -> None:
    untrimmed = ModuleMap(pt_min=0.5, trim=0.0, sparse_quantile=0.0).fit(train)
    for mm in (fitted, untrimmed):
        assert mm.is_fitted and (mm.lo <= mm.hi).all()
    found = {}
    for record in train[:3]:
        ev = _tensors(record)
        for name, mm in (("trimmed", fitted), ("untrimmed", untrimmed)):
            edges = mm(*(ev[k] for k in COLS))
            m = edge_metrics(
                edges, ev["truth_edges"], ev["particle_id"], ev["pt"], len(ev["x"]), [0.5]
            )
            found[name] = found.get(name, 0) + m["n_truth_found_pt0.5"] / m["n_truth_pt0.5"] / 3
            src, dst = edges
            assert (ev["x"][src].norm(dim=1) <= ev["x"][dst].norm(dim=1)).all(), "inner -> outer"
    # untrimmed windows span every fitted edge; trimmed quantiles (of the pairs, and of the
    # layer pairs for sparse pairs) leave out a few outliers
    assert found["untrimmed"] == 1.0
    assert 0.97 <= found["trimmed"] < 1.0


def test_group_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    count = np.array([1, 5, 300, 2, 1000])
    first = np.r_[0, np.cumsum(count)[:-1]]
    values = rng.normal(size=(count.sum(), 2))
    values[first[1] : first[1] + 5, 1] = np.nan  # a group without defined values
    values[first[2] + 7, 0] = np.nan
    lo, hi = _group_quantiles(values, first, count, 0.01)
    for g, (f, k) in enumerate(zip(first, count, strict=True)):
        for col in range(2):
            v = np.sort(values[f : f + k, col][~np.isnan(values[f : f + k, col])])
            if len(v) == 0:
                assert np.isnan(lo[g, col]) and np.isnan(hi[g, col])
                continue
            assert lo[g, col] == v[int(np.floor(0.01 * (len(v) - 1)))]
            assert hi[g, col] == v[int(np.ceil(0.99 * (len(v) - 1)))]
    lo0, hi0 = _group_quantiles(values, first, count, 0.0)
    assert lo0[2, 1] == np.nanmin(values[first[2] : first[3], 1])
    assert hi0[4, 0] == values[first[4] :, 0].max()


def test_vectorised_application_equals_a_naive_loop(train: list[dict], fitted: ModuleMap) -> None:
    ev = _tensors(train[1])
    # only hits on modules of the map (no fallback)
    known = fitted.module_index(module_key(*(ev[k] for k in COLS[1:]))) >= 0
    ev = {k: ev[k][known] for k in COLS}
    edges = fitted(*(ev[k] for k in COLS))
    assert edges.shape[1] > 20
    torch.testing.assert_close(edges, _naive(fitted, ev))
    # tiny chunks and a joined batch of two events give the same graph
    small = ModuleMap(max_candidates=7)
    small.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(small(*(ev[k] for k in COLS)), edges)
    joined = {k: torch.cat([ev[k], ev[k]]) for k in COLS}
    batch = torch.arange(2).repeat_interleave(len(ev["x"]))
    both = fitted(*(joined[k] for k in COLS), batch)
    n = len(ev["x"])
    assert torch.equal(both, orient_and_unique(torch.cat([edges, edges + n], 1), joined["x"]))


def test_unseen_modules_fall_back_on_layer_pair_windows(fitted: ModuleMap) -> None:
    ev = _tensors(_record(40, 8))
    base = fitted(*(ev[k] for k in COLS))
    # move the hits of one layer to module ids no training event had
    layer = ev["layer_id"][ev["truth_edges"][0, 0]]
    volume = ev["volume_id"][ev["truth_edges"][0, 0]]
    moved = (ev["layer_id"] == layer) & (ev["volume_id"] == volume)
    module = torch.where(moved, ev["module_id"] + 500_000, ev["module_id"])
    edges = fitted(ev["x"], ev["volume_id"], ev["layer_id"], module)
    touching = moved[edges[0]] | moved[edges[1]]
    assert touching.any(), "the fallback joins the unseen hits"
    # the fallback's edges are those of the layer-pair map that touch the unseen hits
    lp = fitted.fallback(ev["x"], ev["volume_id"], ev["layer_id"])
    lp = lp[:, moved[lp[0]] | moved[lp[1]]]
    n = len(ev["x"])
    assert torch.equal(
        torch.sort(edges[0, touching] * n + edges[1, touching])[0],
        torch.sort(lp[0] * n + lp[1])[0],
    )
    # edges between seen modules are unchanged
    assert torch.equal(edges[:, ~touching], base[:, ~(moved[base[0]] | moved[base[1]])])


def test_state_round_trips_through_state_dict(fitted: ModuleMap) -> None:
    ev = _tensors(_record(40, 9))
    fresh = ModuleMap()
    assert not fresh.is_fitted
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.is_fitted and fresh.fallback.is_fitted
    assert torch.equal(fresh(*(ev[k] for k in COLS)), fitted(*(ev[k] for k in COLS)))


def test_bad_input_raises_clear_errors(train: list[dict], fitted: ModuleMap) -> None:
    ev = _tensors(train[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        ModuleMap()(*(ev[k] for k in COLS))
    with pytest.raises(ValueError, match="no truth edges"):
        ModuleMap(pt_min=1e6).fit(train[:1])
    with pytest.raises(KeyError, match="module_id"):
        ModuleMap().fit([{k: v for k, v in train[0].items() if k != "module_id"}])
    with pytest.raises(ValueError, match="differ in length"):
        fitted(ev["x"], ev["volume_id"], ev["layer_id"], ev["module_id"][:-1])
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        fitted(ev["x"][:, :2], ev["volume_id"], ev["layer_id"], ev["module_id"])
    with pytest.raises(ValueError, match="module_id must lie"):
        fitted(ev["x"], ev["volume_id"], ev["layer_id"], -ev["module_id"] - 1)
    with pytest.raises(KeyError, match="lacks"):
        fitted.build({k: ev[k] for k in ("x", "volume_id", "layer_id")})
    with pytest.raises(ValueError, match="margin"):
        ModuleMap(margin=-1)


def test_runs_on_the_real_event(fitted: ModuleMap) -> None:
    frames = real_event()
    rec = _graph_record(SubEvent(frames["hits"], frames["particles"], frames["truth"], None), {})
    ev = _tensors(rec["nodes"])
    truth = torch.as_tensor(rec["truth_edges"]["edge"].T)
    edges = fitted.build(ev)
    m = edge_metrics(edges, truth, ev["particle_id"], ev["pt"], len(ev["x"]), [1.0])
    assert edges.shape[1] > 0 and m["n_truth_found_pt1"] > 0.5 * m["n_truth_pt1"]


def test_pipeline_selects_the_module_map(tmp_path) -> None:  # noqa: ANN001
    from hepexp.data.trackml.datamodule import TrackMLDataModule
    from hepexp.models.interaction_gnn import InteractionGNNTracker

    dm = TrackMLDataModule(
        "graph",
        data_dir=str(tmp_path),
        simulation={"n_events": 6, "n_particles": 100, "seed": 3},
        splits={"train": 4, "val": 1, "test": 1},
        particles_per_event=None,
        noise=True,
        batch_size=1,
        prepare_workers=1,
    )
    dm.setup()
    cfg = {"method": "module_map", "module_map": {"pt_min": 0.5}}

    def model() -> InteractionGNNTracker:
        return InteractionGNNTracker(hidden=8, n_iterations=1, graph=cfg, filter={"enabled": False})

    first = model()
    assert isinstance(first.graph_builder, ModuleMap)
    first.fit_graph_stage(dm)
    assert first.graph_ready
    batch = next(iter(dm.loader("test", batch_size=1, shuffle=False)))
    edges = first.build_graph(batch)["edges"]
    assert edges.shape[1] > 0
    # the fitted map travels in the model's state (the checkpoint)
    second = model()
    second.load_state_dict(first.state_dict())
    assert torch.equal(second.build_graph(batch)["edges"], edges)
    # a raw event (hits table) goes through predict: the module ids reach the map
    hits = real_event()["hits"]
    tracks, scored = second.predict(hits)
    assert len(tracks) == len(hits) and len(scored) > 0
    with pytest.raises(Exception, match="unknown keys"):
        InteractionGNNTracker(graph={"method": "module_map", "module_map": {"bogus": 1}})
