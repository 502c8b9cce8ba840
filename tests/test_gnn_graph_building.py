"""Graph construction: the layer-pair map on simulated events, radius graphs, edge metrics,
and the graph view's per-node arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.data.trackml.datamodule import GraphCollate, TrackMLDataModule
from hepexp.reco.graph_building import (
    LayerPairMap,
    cylindrical,
    edge_geometry,
    edge_metrics,
    edge_ratios,
    orient_and_unique,
    radius_graph,
)


@pytest.fixture(scope="module")
def graph_data(tmp_path_factory: pytest.TempPathFactory) -> TrackMLDataModule:
    """14 simulated whole events of 150 particles with noise: 10 train, 2 val, 2 test."""
    dm = TrackMLDataModule(
        "graph",
        data_dir=str(tmp_path_factory.mktemp("gnn_data")),
        simulation={"n_events": 14, "n_particles": 150, "seed": 5},
        splits={"train": 10, "val": 2, "test": 2},
        particles_per_event=None,
        noise=True,
        batch_size=1,
        prepare_workers=1,
    )
    dm.setup()
    return dm


def _records(dm: TrackMLDataModule, split: str) -> list[dict]:
    out = []
    for item in dm.dataset(split):
        record = dict(item["nodes"])
        record["truth_edges"] = item["truth_edges"]["edge"].T
        out.append(record)
    return out


def test_graph_view_has_module_ids_and_particle_pt(graph_data: TrackMLDataModule) -> None:
    item = graph_data.dataset("test")[0]
    _, frames = next(graph_data.events("test"))
    nodes = item["nodes"]
    hits = frames.hits.set_index("hit_id").loc[nodes["hit_id"]]
    np.testing.assert_array_equal(nodes["module_id"], hits["module_id"].to_numpy())
    truth = frames.truth.set_index("hit_id").loc[nodes["hit_id"]]
    pt = np.hypot(frames.particles.px, frames.particles.py)
    pt_of = pd.Series(pt.to_numpy(), index=frames.particles.particle_id)
    expected = np.where(truth.particle_id == 0, 0.0, pt_of.reindex(truth.particle_id).fillna(0))
    np.testing.assert_allclose(nodes["pt"], expected, rtol=1e-6)
    assert (nodes["pt"][nodes["particle_id"] == 0] == 0).all()
    batch = GraphCollate()([item, item])
    assert batch["module_id"].shape == batch["pt"].shape == (2 * len(nodes["x"]),)


@pytest.fixture(scope="module")
def fitted_map(graph_data: TrackMLDataModule) -> LayerPairMap:
    return LayerPairMap(pt_min=0.5, quantile=0.001).fit(_records(graph_data, "train"))


def test_layer_pair_map_finds_the_truth_graph(
    graph_data: TrackMLDataModule, fitted_map: LayerPairMap
) -> None:
    counts = []
    for record in _records(graph_data, "test"):
        nodes = {k: torch.as_tensor(v) for k, v in record.items()}
        edges = fitted_map(nodes["x"], nodes["volume_id"], nodes["layer_id"])
        counts.append(
            edge_metrics(
                edges, nodes["truth_edges"], nodes["particle_id"], nodes["pt"], len(nodes["x"])
            )
        )
        src, dst = edges
        assert (nodes["x"][src].norm(dim=1) <= nodes["x"][dst].norm(dim=1)).all(), "inner -> outer"
        assert len(torch.unique(src * len(nodes["x"]) + dst)) == edges.shape[1], "no duplicates"
    ratios = edge_ratios(pd.DataFrame(counts).sum().to_dict())
    # windows fitted on pT >= 0.5 GeV hold nearly all edges of pT > 0.9 GeV particles
    assert ratios["efficiency_pt0.9"] > 0.97
    assert ratios["efficiency"] > 0.6
    # far better than joining everything: in these sparse events >10% of edges are true
    assert ratios["purity"] > 0.1


def test_layer_pair_map_keeps_events_apart_and_survives_a_checkpoint(
    graph_data: TrackMLDataModule, fitted_map: LayerPairMap
) -> None:
    a, b = _records(graph_data, "val")
    single = [
        fitted_map(*(torch.as_tensor(r[k]) for k in ("x", "volume_id", "layer_id"))) for r in (a, b)
    ]
    joined = {
        k: torch.as_tensor(np.concatenate([a[k], b[k]])) for k in ("x", "volume_id", "layer_id")
    }
    batch = torch.cat([torch.zeros(len(a["x"])), torch.ones(len(b["x"]))]).long()
    both = fitted_map(joined["x"], joined["volume_id"], joined["layer_id"], batch)
    expected = torch.cat([single[0], single[1] + len(a["x"])], dim=1)
    assert torch.equal(both, orient_and_unique(expected, joined["x"]))
    # a fresh map takes the fitted tables (data-dependent shapes) from a state dict
    fresh = LayerPairMap()
    fresh.load_state_dict(fitted_map.state_dict())
    assert torch.equal(
        fresh(*(torch.as_tensor(a[k]) for k in ("x", "volume_id", "layer_id"))), single[0]
    )
    # chunked candidate search gives the same graph
    small = LayerPairMap(max_candidates=5000)
    small.load_state_dict(fitted_map.state_dict())
    assert torch.equal(
        small(*(torch.as_tensor(a[k]) for k in ("x", "volume_id", "layer_id"))), single[0]
    )
    with pytest.raises(RuntimeError, match="not fitted"):
        LayerPairMap()(joined["x"], joined["volume_id"], joined["layer_id"])


def test_layer_pair_map_windows_hold_the_fitted_edges(fitted_map: LayerPairMap) -> None:
    assert len(fitted_map.pairs) > 50
    assert (fitted_map.lo <= fitted_map.hi).all()
    assert (fitted_map.pair_edges >= fitted_map.min_edges).all()
    with pytest.raises(ValueError, match="no truth edges"):
        LayerPairMap(pt_min=1e6).fit([])


def test_edge_geometry_of_a_straight_track() -> None:
    # a straight line from z0 = 10 mm at 45 degrees in r-z, constant phi
    r = torch.tensor([30.0, 70.0, 70.2], dtype=torch.float64)
    x = torch.stack([r * np.cos(0.3), r * np.sin(0.3), 10.0 + r], dim=1)
    g = edge_geometry(cylindrical(x), torch.tensor([0, 1]), torch.tensor([1, 2]))
    dr, dphi, dz, z0, slope, deta = g.T
    torch.testing.assert_close(dr, torch.tensor([40.0, 0.2]).double())
    torch.testing.assert_close(z0[0], torch.tensor(10.0).double())
    assert dphi.abs().max() < 1e-9 and slope[0].abs() < 1e-9
    assert torch.isnan(z0[1]) and torch.isnan(slope[1]), "undefined below |dr| = 0.5 mm"


def test_radius_graph_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.rand(300, 3, generator=g)
    batch = (torch.arange(300) >= 150).long()
    edges = radius_graph(emb, r=0.15, k=1000, batch=batch, block=64)
    d = torch.cdist(emb, emb)
    expected = (d < 0.15) & (batch[:, None] == batch[None, :]) & ~torch.eye(300, dtype=bool)
    got = torch.zeros(300, 300, dtype=bool)
    got[edges[0], edges[1]] = True
    assert torch.equal(got, expected)
    # k caps the neighbours per point at the nearest ones
    capped = radius_graph(emb, r=10.0, k=5, batch=batch)
    assert (torch.bincount(capped[0], minlength=300) == 5).all()
    nearest = torch.topk(
        d + torch.eye(300) * 99 + (batch[:, None] != batch[None, :]) * 99, 5, largest=False
    )
    assert torch.equal(
        torch.sort(capped[1].view(300, 5), dim=1).values, torch.sort(nearest.indices, dim=1).values
    )


def test_edge_metrics_counts() -> None:
    truth = torch.tensor([[0, 1, 3], [1, 2, 4]])
    edges = torch.tensor([[0, 2, 0, 3], [1, 1, 2, 5]])  # 0-1 and 1-2 found (reversed ok)
    pid = torch.tensor([7, 7, 7, 8, 8, 0])
    pt = torch.tensor([2.0, 2.0, 2.0, 0.5, 0.5, 0.0])
    c = edge_metrics(edges, truth, pid, pt, 6)
    assert c["n_truth"] == 3 and c["n_truth_found"] == 2 and c["n_true"] == 2
    assert c["n_same_particle"] == 3, "0-2 joins one particle without being a truth edge"
    assert c["n_truth_pt1"] == 2 and c["n_truth_found_pt1"] == 2
    r = edge_ratios(c)
    assert r["efficiency"] == pytest.approx(2 / 3) and r["purity"] == 0.5
    assert r["efficiency_pt1"] == 1.0 and r["purity_same_particle"] == 0.75


def test_stage_cache_is_reused(graph_data: TrackMLDataModule) -> None:
    from hepexp.models.interaction_gnn import InteractionGNNTracker

    model = InteractionGNNTracker(hidden=8, n_iterations=1, filter={"enabled": False})
    model.fit_graph_stage(graph_data)
    stored = list((Path(graph_data.data_dir) / "stages").glob("graph-*.pt"))
    assert len(stored) == 1
    again = InteractionGNNTracker(hidden=8, n_iterations=1, filter={"enabled": False})
    stamp = stored[0].stat().st_mtime_ns
    again.fit_graph_stage(graph_data)
    assert stored[0].stat().st_mtime_ns == stamp, "loaded, not refitted"
    assert torch.equal(again.graph_builder.lo, model.graph_builder.lo)
    other = InteractionGNNTracker(graph={"layer_pairs": {"pt_min": 0.8}}, filter={"enabled": False})
    other.fit_graph_stage(graph_data)
    assert len(list((Path(graph_data.data_dir) / "stages").glob("graph-*.pt"))) == 2


def test_metric_learning_graph(graph_data: TrackMLDataModule) -> None:
    """A briefly trained embedding: its radius keeps the requested share of the validation
    truth edges, and its graph finds most high-pT truth edges at a usable purity."""
    from hepexp.models.interaction_gnn import InteractionGNNTracker

    def embedding_model() -> InteractionGNNTracker:
        return InteractionGNNTracker(
            hidden=8,
            n_iterations=1,
            graph={
                "method": "metric_learning",
                "metric_learning": {"hidden": 64, "epochs": 4, "target_efficiency": 0.95},
            },
            filter={"enabled": False},
        )

    torch.manual_seed(0)
    model = embedding_model()
    model.fit_graph_stage(graph_data)
    model.train_embedding(graph_data)
    builder = model.graph_builder
    assert builder.is_fitted and float(builder.radius) > 0
    counts = []
    for split in ("val", "test"):
        for batch in graph_data.loader(split, shuffle=False):
            edges = builder.build(batch)
            n = len(batch["x"])
            counts.append(
                edge_metrics(edges, batch["truth_edges"], batch["particle_id"], batch["pt"], n)
            )
    val = edge_ratios(pd.DataFrame(counts[:2]).sum().to_dict())
    test = edge_ratios(pd.DataFrame(counts[2:]).sum().to_dict())
    # the radius keeps 95% of the pT >= 0.5 GeV truth edges (k nearest caps a few more)
    assert val["efficiency_pt0.9"] > 0.85
    assert test["efficiency_pt0.9"] > 0.8
    assert test["purity_same_particle"] > 0.05
    stored = list((Path(graph_data.data_dir) / "stages").glob("embedding-*.pt"))
    assert len(stored) == 1
    again = embedding_model()
    again.train_embedding(graph_data)
    assert float(again.graph_builder.radius) == float(builder.radius), "loaded from the cache"
