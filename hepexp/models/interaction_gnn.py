"""model=interaction_gnn: the Exa.TrkX pipeline, hits -> graph -> edge scores -> tracks.

Stages, all inside one LightningModule so that ``python train.py model=interaction_gnn
data=trackml`` runs everything and the checkpoint alone reproduces the pipeline:

1. **Graph construction** (:class:`~hepexp.reco.graph_building.LayerPairMap`): layer pairs and
   geometric windows learned from the training events' truth graphs (no gradient), or with
   ``graph.method: module_map`` (:class:`~hepexp.reco.module_map.ModuleMap`) module pairs and
   windows, for full-size events. Fitted in ``setup``; the fitted tables are buffers of this
   module.
2. **Filter** (optional, :class:`EdgeFilter`): an MLP on each candidate edge (both hits'
   features and the edge geometry), trained for ``filter.epochs`` at the start of fitting; its
   cut keeps ``filter.target_efficiency`` of the validation events' truth edges.
3. **Interaction GNN** (:class:`InteractionGNN`): node and edge encoders, ``n_iterations``
   rounds of edge and node updates with residuals (sum and max aggregation of the edges into
   and out of each hit) sharing their weights, and an edge classifier; weighted BCE against
   "both hits belong to one particle". Trained by the ordinary Lightning loop.
4. **Track building** (:mod:`hepexp.reco.track_building`): connected components of the edges
   above a cut, or the junction-aware walkthrough.

Stages 1 and 2 are cached on disk beside the data cache, keyed by their settings and the data,
so a second run with the same settings starts at stage 3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from hepexp.data.trackml.datamodule import model_inputs
from hepexp.data.trackml.io import write_atomic_csv
from hepexp.errors import ConfigError
from hepexp.models.base import HEPModule
from hepexp.nn.blocks import mlp
from hepexp.nn.scatter import scatter_max, scatter_sum
from hepexp.reco import track_building
from hepexp.reco.evaluation import TrackingEvaluation
from hepexp.reco.graph_building import (
    EDGE_FEATURES,
    LayerPairMap,
    MetricLearningGraph,
    cylindrical,
    edge_geometry,
    edge_metrics,
    edge_ratios,
)
from hepexp.reco.module_map import ModuleMap
from hepexp.utils.defaults import keyword_defaults
from hepexp.utils.resources import peak_memory_gb

if TYPE_CHECKING:
    from hepexp.data.trackml.datamodule import TrackMLDataModule

log = logging.getLogger(__name__)
STAGE_CACHE_VERSION = 1


# -- networks ----------------------------------------------------------------------------------
class InteractionGNN(nn.Module):
    """Interaction network over hits (nodes) and candidate edges.

    ``h = node_encoder(x)``, ``e = edge_encoder([x_src, x_dst, g])`` (g: edge geometry), then
    ``n_iterations`` times (weights shared between iterations):
    ``h <- h + node_net([h, sum_in e, max_in e, sum_out e, max_out e])`` and
    ``e <- e + edge_net([h_src, h_dst, e])``; finally ``logit = classifier([h_src, h_dst, e])``.
    "in" edges of a hit come from hits nearer the origin, "out" edges go to farther ones.
    Every MLP has ``mlp_layers`` Linear layers, each followed by LayerNorm and the activation
    (the classifier's last layer excepted). ``checkpointing`` recomputes each iteration in the
    backward pass instead of storing its activations (for large graphs). Without gradients,
    ``forward(..., chunk=k)`` runs the edge networks on at most ``k`` edges at a time, so that
    memory grows with the (E, hidden) edge states only, not with the MLPs' activations.
    """

    def __init__(
        self,
        node_features: int,
        edge_features: int = len(EDGE_FEATURES),
        hidden: int = 128,
        n_iterations: int = 8,
        mlp_layers: int = 3,
        activation: str = "silu",
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if n_iterations < 1 or mlp_layers < 1 or hidden < 1:
            raise ConfigError("interaction_gnn: hidden, n_iterations and mlp_layers must be >= 1")
        h = hidden

        def net(n_in: int, n_out: int = h, final: bool = True) -> nn.Sequential:
            return mlp([n_in] + [h] * (mlp_layers - 1) + [n_out], activation, final, "layer")

        self.n_iterations = n_iterations
        self.checkpointing = checkpointing
        self.node_encoder = net(node_features)
        self.edge_encoder = net(2 * node_features + edge_features)
        self.node_net = net(5 * h)
        self.edge_net = net(3 * h)
        self.classifier = net(3 * h, 1, final=False)

    def _iteration(
        self,
        h: torch.Tensor,
        e: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[0]
        agg = [h, scatter_sum(e, dst, n), scatter_max(e, dst, n, chunk)]
        agg += [scatter_sum(e, src, n), scatter_max(e, src, n, chunk)]
        h = h + self.node_net(torch.cat(agg, dim=1))
        if chunk is None:
            return h, e + _edgewise(self.edge_net, h, e, src, dst)
        for s in _slices(e.shape[0], chunk):  # no gradients: e is updated in place
            e[s] += _edgewise(self.edge_net, h, e[s], src[s], dst[s])
        return h, e

    def forward(
        self,
        x: torch.Tensor,
        edge_attr: torch.Tensor,
        edges: torch.Tensor,
        chunk: int | None = None,
    ) -> torch.Tensor:
        """Node features (n, F), edge geometry (E, G), edges (2, E) -> edge logits (E,).

        ``chunk``: without gradients, the edge networks run on at most ``chunk`` edges at a
        time (same result, memory bounded by the (E, hidden) edge states)."""
        if torch.is_grad_enabled() or (chunk is not None and edges.shape[1] <= chunk):
            chunk = None  # training needs every edge's activations
        src, dst = edges
        h = self.node_encoder(x)
        e = _edgewise(self.edge_encoder, x, edge_attr, src, dst, chunk)
        use_ckpt = self.checkpointing and torch.is_grad_enabled()
        for _ in range(self.n_iterations):
            if use_ckpt:
                h, e = checkpoint(self._iteration, h, e, src, dst, use_reentrant=False)
            else:
                h, e = self._iteration(h, e, src, dst, chunk)
        return _edgewise(self.classifier, h, e, src, dst, chunk).squeeze(1)


def _slices(n: int, chunk: int) -> list[slice]:
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


def _edgewise(
    net: nn.Module,
    nodes: torch.Tensor,
    edge_states: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """``net([nodes[src], nodes[dst], edge_states])``, on at most ``chunk`` edges at a time."""
    if chunk is None:
        return net(torch.cat([nodes[src], nodes[dst], edge_states], dim=1))
    parts = _slices(len(src), chunk)
    return torch.cat([_edgewise(net, nodes, edge_states[s], src[s], dst[s]) for s in parts])


class EdgeFilter(nn.Module):
    """MLP edge classifier on ``[x_src, x_dst, edge geometry]`` (the pipeline's filter)."""

    def __init__(
        self,
        node_features: int,
        edge_features: int = len(EDGE_FEATURES),
        hidden: int = 128,
        layers: int = 3,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        sizes = [2 * node_features + edge_features] + [hidden] * layers + [1]
        self.net = mlp(sizes, activation, norm="layer")

    def forward(
        self,
        x: torch.Tensor,
        edge_attr: torch.Tensor,
        edges: torch.Tensor,
        chunk: int | None = None,
    ) -> torch.Tensor:
        """Edge logits; without gradients, ``chunk`` bounds the edges scored at once."""
        chunk = None if torch.is_grad_enabled() else chunk
        return _edgewise(self.net, x, edge_attr, edges[0], edges[1], chunk).squeeze(1)


class FeatureScaler(nn.Module):
    """Standardises edge geometry with a median and a robust width fitted on truth edges;
    clamps to +-``clip`` and maps undefined (NaN) features to 0."""

    def __init__(self, n: int = len(EDGE_FEATURES), clip: float = 8.0) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("center", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.register_buffer("is_fitted", torch.tensor(False))

    @property
    def fitted(self) -> bool:
        return bool(self.is_fitted)

    def fit(self, values: np.ndarray) -> None:
        lo, med, hi = np.nanpercentile(values, [16, 50, 84], axis=0)
        width = np.where(np.isfinite(hi - lo) & (hi > lo), (hi - lo) / 2, 1.0)
        self.center = torch.as_tensor(np.nan_to_num(med), dtype=torch.float32)
        self.scale = torch.as_tensor(width, dtype=torch.float32)
        self.is_fitted = torch.tensor(True)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        z = ((g - self.center) / self.scale).clamp(-self.clip, self.clip)
        return torch.nan_to_num(z, nan=0.0)


# -- the pipeline --------------------------------------------------------------------------------
DEFAULT_GRAPH = {"method": "layer_pairs", "max_fit_events": None}
DEFAULT_LAYER_PAIRS = keyword_defaults(LayerPairMap)
DEFAULT_METRIC_LEARNING = {
    "emb_dim": 8,
    "hidden": 128,
    "layers": 3,
    "knn": 64,
    "epochs": 10,
    "lr": 1e-3,
    "margin": 0.1,
    "n_random": 2,
    "hard_knn": 20,
    "train_pt_min": 0.0,
    "target_efficiency": 0.99,
    "target_pt_min": 0.5,
    "max_val_events": 20,
}
DEFAULT_MODULE_MAP = keyword_defaults(ModuleMap)
GRAPH_METHODS = ("layer_pairs", "module_map", "metric_learning")
DEFAULT_FILTER = {
    "enabled": True,
    "hidden": 128,
    "layers": 3,
    "epochs": 3,
    "lr": 1e-3,
    "pos_weight": 1.0,
    "target_efficiency": 0.995,
    "target_pt_min": 0.5,
    "max_val_events": 20,
}
#: pT thresholds (GeV) of the tracking efficiencies: the Exa.TrkX ones and every particle
PT_THRESHOLDS = (0.9, 1.0, 0.0)
DEFAULT_TRACKS = {"method": "walkthrough", "cc_cut": 0.8, "walk_cut": 0.7, "min_hits": 4}


def _merged(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, name: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"model.{name}: unknown keys {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **given}


def _digest(settings: Any) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


class InteractionGNNTracker(HEPModule):
    """The Exa.TrkX pipeline (see the module docstring).

    Args:
        node_features: per-hit input features (``${data.num_features}``: 3, or 5 with cells).
        hidden, n_iterations, mlp_layers, activation, checkpointing: the
            :class:`InteractionGNN`.
        pos_weight: weight of true edges in the BCE loss.
        score_cut: edge score above which an edge counts as true in the edge metrics.
        graph: ``method`` (``layer_pairs``: :class:`~hepexp.reco.graph_building.LayerPairMap`
            with the settings in ``layer_pairs``; ``module_map``:
            :class:`~hepexp.reco.module_map.ModuleMap` with the settings in ``module_map``;
            ``metric_learning``:
            :class:`~hepexp.reco.graph_building.MetricLearningGraph` with the settings in
            ``metric_learning``, trained for ``epochs`` before the filter, its radius set to
            keep ``target_efficiency`` of the validation truth edges of particles with pT >=
            ``target_pt_min``), ``max_fit_events`` (training events used to fit the map and
            the feature scaling; null: all).
        filter: ``enabled``, ``hidden``, ``layers``, ``epochs``, ``lr``, ``pos_weight``,
            ``target_efficiency`` (share of the truth edges of particles with pT >=
            ``target_pt_min`` that the cut keeps, on at most ``max_val_events`` validation
            events).
        tracks: ``method`` (``walkthrough`` or ``components``), ``cc_cut``, ``walk_cut``
            (walkthrough only), ``min_hits``.
        cache_graphs: keep each training/validation event's graph in memory (the graph stages
            are fixed while the GNN trains).
        inference_chunk: without gradients (validation, evaluation, conversion), the filter
            and the GNN's edge networks run on at most this many edges at a time, which bounds
            the memory of a full-size event (null: all at once).
        init_from: a checkpoint of this model to start training from (fine-tuning, e.g. on
            denser events): its graph stage, filter (and cut) and GNN weights are loaded at the
            start of the fit, so the stages are not fitted again. Evaluation ignores it.
    """

    view = "graph"

    def __init__(
        self,
        node_features: int = 3,
        hidden: int = 128,
        n_iterations: int = 8,
        mlp_layers: int = 3,
        activation: str = "silu",
        checkpointing: bool = False,
        pos_weight: float = 2.0,
        score_cut: float = 0.5,
        graph: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,  # noqa: A002
        tracks: Mapping[str, Any] | None = None,
        cache_graphs: bool = True,
        inference_chunk: int | None = 250_000,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        graph = dict(graph or {})
        self.layer_pairs_cfg = _merged(
            DEFAULT_LAYER_PAIRS, graph.pop("layer_pairs", None), "graph.layer_pairs"
        )
        self.module_map_cfg = _merged(
            DEFAULT_MODULE_MAP, graph.pop("module_map", None), "graph.module_map"
        )
        self.metric_cfg = _merged(
            DEFAULT_METRIC_LEARNING, graph.pop("metric_learning", None), "graph.metric_learning"
        )
        self.graph_cfg = _merged(DEFAULT_GRAPH, graph, "graph")
        if self.graph_cfg["method"] not in GRAPH_METHODS:
            raise ConfigError(
                f"model.graph.method: one of {GRAPH_METHODS}, got {self.graph_cfg['method']!r}"
            )
        self.filter_cfg = _merged(DEFAULT_FILTER, filter, "filter")
        self.tracks_cfg = _merged(DEFAULT_TRACKS, tracks, "tracks")
        if self.tracks_cfg["method"] not in ("walkthrough", "components"):
            raise ConfigError(
                f"model.tracks.method: 'walkthrough' or 'components', got "
                f"{self.tracks_cfg['method']!r}"
            )
        self.node_features = node_features
        if self.graph_cfg["method"] == "layer_pairs":
            self.graph_builder = LayerPairMap(**self.layer_pairs_cfg)
        elif self.graph_cfg["method"] == "module_map":
            self.graph_builder = ModuleMap(**self.module_map_cfg)
        else:
            ml = self.metric_cfg
            self.graph_builder = MetricLearningGraph(
                node_features, ml["emb_dim"], ml["hidden"], ml["layers"], ml["knn"], activation
            )
        self.scaler = FeatureScaler()
        self.filter = (
            EdgeFilter(
                node_features,
                hidden=self.filter_cfg["hidden"],
                layers=self.filter_cfg["layers"],
                activation=activation,
            )
            if self.filter_cfg["enabled"]
            else None
        )
        self.register_buffer("filter_cut", torch.tensor(float("nan")))
        self.gnn = InteractionGNN(
            node_features,
            hidden=hidden,
            n_iterations=n_iterations,
            mlp_layers=mlp_layers,
            activation=activation,
            checkpointing=checkpointing,
        )
        self.pos_weight = pos_weight
        self.score_cut = score_cut
        self.cache_graphs = cache_graphs
        if inference_chunk is not None and inference_chunk < 1:
            raise ConfigError(f"model.inference_chunk: >= 1 or null, got {inference_chunk}")
        self.inference_chunk = inference_chunk
        self._graph_cache: dict[int, torch.Tensor] = {}
        self._val_counts: list[dict] = []

    # -- graph stages -------------------------------------------------------------------------
    @property
    def filter_ready(self) -> bool:
        return self.filter is None or bool(torch.isfinite(self.filter_cut))

    def edge_inputs(self, x_mm: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Standardised edge geometry (E, 6) of ``edges`` between hits at ``x_mm``."""
        return self.scaler(edge_geometry(cylindrical(x_mm.double()), edges[0], edges[1]).float())

    @torch.no_grad()
    def filter_scores(self, batch: Mapping[str, torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        """The filter's probability (float32) for each of ``edges`` (in edge chunks)."""
        attr = self.edge_inputs(batch["x"], edges)
        logits = self.filter(batch["features"], attr, edges, chunk=self.inference_chunk)
        return torch.sigmoid(logits.float())

    @torch.no_grad()
    def build_graph(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Candidate edges of a batch (map, then filter when trained): ``edges`` (2, E),
        ``n_map_edges`` and, with the filter, ``filter_scores`` of the map edges."""
        edges = self.graph_builder.build(batch)
        out = {"n_map_edges": torch.tensor(edges.shape[1])}
        if self.filter is not None and self.filter_ready:
            scores = self.filter_scores(batch, edges)
            out["filter_scores"] = scores
            out["map_edges"] = edges
            edges = edges[:, scores >= self.filter_cut]
        out["edges"] = edges
        return out

    def _cached_edges(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The graph of a training/validation batch, from the per-event cache when possible."""
        ids = batch["event_id"].tolist()
        counts = torch.bincount(batch["batch"], minlength=len(ids))
        offsets = torch.cumsum(counts, 0) - counts
        if not (self.cache_graphs and all(i in self._graph_cache for i in ids)):
            edges = self.build_graph(batch)["edges"]
            if not self.cache_graphs:
                return edges
            owner = batch["batch"][edges[0]]
            for k, event_id in enumerate(ids):
                local = edges[:, owner == k] - offsets[k]
                self._graph_cache[event_id] = local.to(torch.int32).cpu()
            return edges
        parts = [
            self._graph_cache[i].to(batch["x"].device).long() + offsets[k]
            for k, i in enumerate(ids)
        ]
        return torch.cat(parts, dim=1)

    def _stage_path(self, datamodule: TrackMLDataModule, name: str, settings: dict) -> Path:
        data_key = datamodule._cache_dir("train").parent.name
        key = _digest({"version": STAGE_CACHE_VERSION, "data": data_key, **settings})
        return Path(datamodule.data_dir) / "stages" / f"{name}-{key}.pt"

    def _train_records(self, datamodule: TrackMLDataModule) -> Iterator[dict[str, np.ndarray]]:
        dataset = datamodule.dataset("train")
        n = len(dataset)
        if self.graph_cfg["max_fit_events"] is not None:
            n = min(n, int(self.graph_cfg["max_fit_events"]))
        kind = "module" if self.graph_cfg["method"] == "module_map" else "layer-pair"
        for i in tqdm(range(n), desc=f"fitting the {kind} map", unit="event"):
            item = dataset[i]
            record = dict(item["nodes"])
            record["truth_edges"] = item["truth_edges"]["edge"].T
            yield record

    def _graph_settings(self) -> dict:
        method = self.graph_cfg["method"]
        cfg = {
            "layer_pairs": self.layer_pairs_cfg,
            "module_map": self.module_map_cfg,
            "metric_learning": self.metric_cfg,
        }[method]
        return {"method": method, method: cfg, "fit_events": self.graph_cfg["max_fit_events"]}

    @property
    def graph_ready(self) -> bool:
        return bool(self.graph_builder.is_fitted and self.scaler.fitted)

    def fit_graph_stage(self, datamodule: TrackMLDataModule) -> None:
        """Fit the edge-feature scaling and, for ``layer_pairs`` / ``module_map``, the map on the
        training
        events (or load them from the stage cache)."""
        settings = self._graph_settings()
        if self.graph_cfg["method"] == "metric_learning":
            settings = {"fit_events": settings["fit_events"]}  # only the scaler
        path = self._stage_path(datamodule, "graph", settings)
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.scaler.load_state_dict(state["scaler"])
            if "map" in state:
                self.graph_builder.load_state_dict(state["map"])
            log.info("graph stage loaded from %s", path)
            return
        records = list(self._train_records(datamodule))
        feats = []
        for r in records:
            e = torch.as_tensor(r["truth_edges"])
            x = torch.as_tensor(r["x"], dtype=torch.float64)
            feats.append(edge_geometry(cylindrical(x), e[0], e[1]).numpy())
        self.scaler.fit(np.concatenate(feats))
        state = {"scaler": self.scaler.state_dict()}
        if isinstance(self.graph_builder, (LayerPairMap, ModuleMap)):
            self.graph_builder.fit(records)
            state["map"] = self.graph_builder.state_dict()
            kind = "module" if isinstance(self.graph_builder, ModuleMap) else "layer"
            log.info("%s map: %d %s pairs", kind, len(self.graph_builder.pairs), kind)
        _save_atomic(state, path)
        log.info("graph stage saved to %s", path)

    def _val_batches(self, datamodule: TrackMLDataModule, limit: int) -> Iterator[dict]:
        for i, batch in enumerate(datamodule.loader("val", batch_size=1, shuffle=False)):
            if i >= limit:
                return
            yield {k: v.to(self.device) for k, v in batch.items()}

    def train_embedding(self, datamodule: TrackMLDataModule) -> None:
        """Metric learning: train the embedding on the training events with the hinge loss,
        then set the radius that keeps ``target_efficiency`` of the validation truth edges
        (or load both from the stage cache)."""
        settings = {**self._graph_settings(), "node_features": self.node_features}
        settings["seed"] = datamodule.seed
        path = self._stage_path(datamodule, "embedding", settings)
        builder: MetricLearningGraph = self.graph_builder
        if path.exists():
            builder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            log.info("embedding loaded from %s (radius %.4f)", path, float(builder.radius))
            return
        cfg = self.metric_cfg
        device = self.device
        torch.manual_seed(datamodule.seed)
        optimizer = torch.optim.Adam(builder.net.parameters(), lr=cfg["lr"])
        loader = datamodule.loader("train", batch_size=1)
        for epoch in range(int(cfg["epochs"])):
            total, steps = 0.0, 0
            desc = f"embedding epoch {epoch + 1}/{cfg['epochs']}"
            for batch in tqdm(loader, desc=desc, unit="event"):
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = builder.loss(
                    batch, cfg["margin"], cfg["n_random"], cfg["hard_knn"], cfg["train_pt_min"]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                steps += 1
            log.info("embedding epoch %d: loss %.5f", epoch + 1, total / max(steps, 1))
        builder.requires_grad_(False)
        distances = []
        with torch.no_grad():
            for batch in self._val_batches(datamodule, int(cfg["max_val_events"])):
                emb = builder.embed(batch["features"], batch["x"])
                truth = batch["truth_edges"]
                truth = truth[:, batch["pt"][truth[0]] >= float(cfg["target_pt_min"])]
                distances.append((emb[truth[0]] - emb[truth[1]]).norm(dim=1).cpu())
        radius = float(torch.quantile(torch.cat(distances).double(), cfg["target_efficiency"]))
        builder.radius.fill_(radius)
        _save_atomic(builder.state_dict(), path)
        log.info("embedding radius %.4f, saved to %s", radius, path)

    def train_filter(self, datamodule: TrackMLDataModule) -> None:
        """Train the edge filter on the training events and set its cut on validation events
        (or load both from the stage cache)."""
        settings = {
            **self._graph_settings(),
            "filter": self.filter_cfg,
            "node_features": self.node_features,
            "seed": datamodule.seed,
        }
        path = self._stage_path(datamodule, "filter", settings)
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.filter.load_state_dict(state["filter"])
            self.filter_cut.fill_(float(state["cut"]))
            log.info("edge filter loaded from %s (cut %.4f)", path, float(state["cut"]))
            return
        cfg = self.filter_cfg
        device = self.device
        torch.manual_seed(datamodule.seed)
        optimizer = torch.optim.Adam(self.filter.parameters(), lr=cfg["lr"])
        pos_weight = torch.tensor(float(cfg["pos_weight"]), device=device)
        self.filter.train()
        loader = datamodule.loader("train", batch_size=1)
        candidates: dict[int, torch.Tensor] = {}  # the graph stage is fixed: build once
        for epoch in range(int(cfg["epochs"])):
            total, steps = 0.0, 0
            desc = f"filter epoch {epoch + 1}/{cfg['epochs']}"
            for batch in tqdm(loader, desc=desc, unit="event"):
                batch = {k: v.to(device) for k, v in batch.items()}
                event_id = int(batch["event_id"][0])
                if event_id in candidates:
                    edges = candidates[event_id].to(device).long()
                else:
                    edges = self.graph_builder.build(batch)
                    if self.cache_graphs:
                        candidates[event_id] = edges.to(torch.int32).cpu()
                y = _same_particle(batch["particle_id"], edges).float()
                logits = self.filter(batch["features"], self.edge_inputs(batch["x"], edges), edges)
                loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                steps += 1
            log.info("filter epoch %d: loss %.4f", epoch + 1, total / max(steps, 1))
        self.filter.requires_grad_(False)
        # the cut keeps target_efficiency of the truth edges (of particles with pT >=
        # target_pt_min) that the graph stage found, on validation events
        scores = []
        with torch.no_grad():
            for batch in self._val_batches(datamodule, int(cfg["max_val_events"])):
                edges = self.graph_builder.build(batch)
                s = self.filter_scores(batch, edges)
                truth = batch["truth_edges"]
                truth = truth[:, batch["pt"][truth[0]] >= float(cfg["target_pt_min"])]
                scores.append(s[_in_truth_graph(edges, truth, len(batch["x"]))].cpu())
        truth_scores = torch.cat(scores).double()
        cut = float(torch.quantile(truth_scores, 1 - float(cfg["target_efficiency"])))
        self.filter_cut.fill_(cut)
        _save_atomic({"filter": self.filter.state_dict(), "cut": torch.tensor(cut)}, path)
        log.info("edge filter cut %.4f, saved to %s", cut, path)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and not self.scaler.fitted:
            self.fit_graph_stage(self.datamodule)

    def _rank_zero_first(self, stage: Callable[[TrackMLDataModule], None]) -> None:
        """Run a trained stage on rank 0 (which caches it), then load it on the other ranks."""
        trainer = self.trainer
        if trainer.is_global_zero:
            stage(self.datamodule)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            stage(self.datamodule)

    def on_fit_start(self) -> None:
        self._graph_cache.clear()
        if not self.graph_builder.is_fitted:
            self._rank_zero_first(self.train_embedding)
        self.graph_builder.requires_grad_(False)
        if self.filter is not None:
            if not self.filter_ready:
                self._rank_zero_first(self.train_filter)
            self.filter.requires_grad_(False)

    # -- GNN training ---------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        """Edge logits of ``edges`` in ``batch``."""
        attr = self.edge_inputs(batch["x"], edges)
        return self.gnn(batch["features"], attr, edges, chunk=self.inference_chunk)

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        edges = self._cached_edges(batch)
        logits = self(batch, edges).float()
        y = _same_particle(batch["particle_id"], edges).float()
        pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        return loss, edges, logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, edges, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        self.log("train/edges", float(edges.shape[1]), batch_size=1)
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, edges, logits = self._step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=1, sync_dist=True)
        kept = edges[:, torch.sigmoid(logits) > self.score_cut]
        self._val_counts.append(
            edge_metrics(
                kept, batch["truth_edges"], batch["particle_id"], batch["pt"], len(batch["x"])
            )
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val_counts:
            return
        totals = pd.DataFrame(self._val_counts).sum().to_dict()
        self._val_counts.clear()
        ratios = edge_ratios(totals)
        self.log("val/edge_efficiency", ratios["efficiency"], prog_bar=True, sync_dist=True)
        self.log("val/edge_purity", ratios["purity_same_particle"], prog_bar=True, sync_dist=True)
        if "efficiency_pt1" in ratios:
            self.log("val/edge_efficiency_pt1", ratios["efficiency_pt1"], sync_dist=True)

    # -- inference ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def find_tracks(
        self,
        event: Mapping[str, torch.Tensor],
        method: str | None = None,
        autocast: str | None = None,
    ) -> dict[str, Any]:
        """Run the pipeline on one event: ``features`` (n, F), ``x`` (n, 3) mm,
        ``volume_id``, ``layer_id``, ``module_id``.

        Returns labels (n,) int64 numpy (-1: no track), edges, scores, the map edges (and
        filter scores) and seconds per stage (``time_graph``, ``time_filter``, ``time_gnn``,
        ``time_tracks``).
        """
        self.eval()
        dev = self.device
        ev = {k: v.to(dev) for k, v in event.items()}
        n = len(ev["x"])
        ev.setdefault("batch", torch.zeros(n, dtype=torch.int64, device=dev))
        ctx = (
            torch.autocast(dev.type, dtype=torch.bfloat16)
            if autocast == "bf16"
            else torch.autocast(dev.type, enabled=False)
        )
        out: dict[str, Any] = {}
        self._sync()
        t0 = time.perf_counter()
        edges = self.graph_builder.build(ev)
        self._sync()
        t1 = time.perf_counter()
        out["map_edges"] = edges
        if self.filter is not None and self.filter_ready:
            with ctx:
                fs = self.filter_scores(ev, edges)
            out["filter_scores"] = fs
            edges = edges[:, fs >= self.filter_cut]
        self._sync()
        t2 = time.perf_counter()
        with ctx:
            scores = torch.sigmoid(self(ev, edges).float())
        self._sync()
        t3 = time.perf_counter()
        edges_np, scores_np = edges.cpu().numpy(), scores.cpu().numpy()
        method = method or self.tracks_cfg["method"]
        labels = build_tracks(n, edges_np, scores_np, method, self.tracks_cfg)
        t4 = time.perf_counter()
        out.update(
            labels=labels,
            edges=edges,
            scores=scores,
            time_graph=t1 - t0,
            time_filter=t2 - t1,
            time_gnn=t3 - t2,
            time_tracks=t4 - t3,
        )
        return out

    def event_inputs(
        self, hits: pd.DataFrame, cells: pd.DataFrame | None = None
    ) -> dict[str, torch.Tensor]:
        """The input of :meth:`find_tracks` for one event's hits (and cells, for a model
        trained with ``data.use_cells``): the graph view's nodes (:func:`views.graph_nodes`)."""
        if (cells is not None) != (self.node_features == 5):
            raise ValueError(
                f"this model takes {self.node_features} node features: "
                + ("pass the event's cells" if cells is None else "it was trained without cells")
            )
        nodes = model_inputs("graph", hits, cells)["nodes"]
        keys = ("features", "x", "volume_id", "layer_id", "module_id")
        return {k: torch.as_tensor(nodes[k]) for k in keys}

    def predict(
        self, hits: pd.DataFrame, cells: pd.DataFrame | None = None, method: str | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The tracks of one event's hits, in memory (what ``convert`` writes, for one event).

        ``hits``: a DataFrame with hit_id, x, y, z (mm), volume_id, layer_id, module_id (as
        :func:`~hepexp.data.trackml.load_event` reads it), every row used; ``cells``: the
        event's cells (hit_id, value), needed by a model trained with ``data.use_cells``.
        ``method``: track builder (``walkthrough`` or ``components``) instead of the model's.

        Returns ``(tracks, edges)``: ``tracks`` has one row per hit, in the order of ``hits``:
        hit_id, track_id (>= 1: a reconstructed track, 0: in no track, as in convert.py's
        submission; score it with ``score_event(truth, tracks, unassigned=0)``); ``edges``
        has one row per edge the GNN scored (after the filter): hit_id_a, hit_id_b, score
        (the GNN's probability that both hits belong to one particle, 0..1).
        """
        tracks, scored, _ = self._predict(hits, cells, method)
        return tracks, scored

    def _predict(
        self, hits: pd.DataFrame, cells: pd.DataFrame | None, method: str | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
        """:meth:`predict`, plus the seconds of each stage."""
        t0 = time.perf_counter()
        inputs = self.event_inputs(hits, cells)
        seconds = {"inputs": time.perf_counter() - t0}
        result = self.find_tracks(inputs, method=method)
        seconds |= {k.removeprefix("time_"): v for k, v in result.items() if k.startswith("time_")}
        hit_id = hits["hit_id"].to_numpy(np.int64)
        edges = result["edges"].cpu().numpy()
        tracks = pd.DataFrame({"hit_id": hit_id, "track_id": result["labels"] + 1})
        scored = pd.DataFrame(
            {
                "hit_id_a": hit_id[edges[0]],
                "hit_id_b": hit_id[edges[1]],
                "score": result["scores"].float().cpu().numpy(),
            }
        )
        return tracks, scored, seconds

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(
        self,
        trainer: pl.Trainer,
        datamodule: TrackMLDataModule,
        out_dir: Path,
        split: str = "test",
    ) -> dict:
        """Edge efficiency/purity after each stage; track efficiencies (DM, perfect, LHC), fake
        and duplicate rates for pT > 0.9 and 1 GeV and for all particles, with both track
        builders; the TrackML score; seconds per event per stage; plots."""
        from hepexp.plotting.trackml import plot_edge_scores, plot_efficiencies

        self.to(trainer.strategy.root_device)
        autocast = "bf16" if str(trainer.precision).startswith("bf16") else None
        dataset = datamodule.dataset(split)
        stage_counts: dict[str, list[dict]] = {"graph": [], "filter": [], "gnn": []}
        tracking = TrackingEvaluation(partial(datamodule.event, split), PT_THRESHOLDS)
        times: list[dict] = []
        edge_scores, sizes = [], []
        for i in tqdm(range(len(dataset)), desc=f"evaluating {split}", unit="event"):
            item = dataset[i]
            nodes = {k: torch.as_tensor(v) for k, v in item["nodes"].items()}
            truth_edges = torch.as_tensor(item["truth_edges"]["edge"].T.copy())
            result = self.find_tracks(nodes, autocast=autocast)
            n = len(nodes["x"])
            pid, pt = nodes["particle_id"], nodes["pt"]
            cpu = {k: result[k].cpu() for k in ("map_edges", "edges", "scores")}
            stage_counts["graph"].append(edge_metrics(cpu["map_edges"], truth_edges, pid, pt, n))
            if "filter_scores" in result:
                stage_counts["filter"].append(edge_metrics(cpu["edges"], truth_edges, pid, pt, n))
            kept = cpu["edges"][:, cpu["scores"] > self.score_cut]
            stage_counts["gnn"].append(edge_metrics(kept, truth_edges, pid, pt, n))
            true_edge = _same_particle(pid, cpu["edges"]).numpy()
            edge_scores.append(np.stack([cpu["scores"].numpy(), true_edge], axis=1))
            times.append({k: result[k] for k in result if k.startswith("time_")})

            hit_id = nodes["hit_id"].numpy()
            sizes.append((n, int(np.unique(pid[pid != 0].numpy()).size)))
            for method in ("walkthrough", "components"):
                t = time.perf_counter()
                labels = (
                    result["labels"]
                    if method == self.tracks_cfg["method"]
                    else build_tracks(
                        n, cpu["edges"].numpy(), cpu["scores"].numpy(), method, self.tracks_cfg
                    )
                )
                if method != self.tracks_cfg["method"]:
                    times[-1][f"time_tracks_{method}"] = time.perf_counter() - t
                tracking.add(item["event_id"], hit_id, labels, builder=method)

        metrics: dict[str, Any] = {"n_events": len(dataset)}
        for stage, counts in stage_counts.items():
            if counts:
                totals = pd.DataFrame(counts).sum().to_dict()
                metrics.update(edge_ratios(totals, prefix=f"edges_{stage}/"))
                metrics[f"edges_{stage}/per_event"] = totals["n_edges"] / len(counts)
        for method in tracking.builders:
            summary = tracking.summary(method)
            main = method == self.tracks_cfg["method"]
            prefix = "tracks" if main else f"tracks_{method}"
            for pt_min in PT_THRESHOLDS:
                for name, value in summary[pt_min].items():
                    metrics[f"{prefix}_pt{pt_min:g}/{name}"] = value
            metrics[("" if main else f"{method}_") + "trackml_score"] = summary["trackml_score"]
        time_table = pd.DataFrame(times)
        for col in time_table.columns:
            metrics[f"seconds_per_event/{col.removeprefix('time_')}"] = float(
                time_table[col].mean()
            )
        stages = ["time_graph", "time_filter", "time_gnn", "time_tracks"]
        metrics["seconds_per_event/total"] = float(time_table[stages].sum(axis=1).mean())
        metrics["peak_memory_gb"] = peak_memory_gb()
        metrics["hits_per_event"] = float(np.mean([s[0] for s in sizes]))
        metrics["particles_per_event"] = float(np.mean([s[1] for s in sizes]))
        plot_efficiencies(tracking.particles(self.tracks_cfg["method"]), out_dir / "efficiency.png")
        plot_edge_scores(np.concatenate(edge_scores), out_dir / "edge_scores.png", self.score_cut)
        return metrics

    # -- conversion ------------------------------------------------------------------------------
    @torch.no_grad()
    def convert(
        self,
        datamodule: TrackMLDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        device: str | None = None,
        **options: Any,
    ) -> dict:
        """TrackML submission (event_id, hit_id, track_id) for every event in ``input_path``
        (a directory of events, or one event's prefix such as ``dir/event000000001``).

        Every hit of the input is assigned: ``track_id`` >= 1 for reconstructed tracks, 0 for
        hits in no track. ``output_path`` is a CSV file (``.csv`` or ``.csv.gz``) or a directory
        (then ``submission.csv`` inside it). Only ``hits`` (and ``cells`` when the model was
        trained with them) are read. Returns counts, the mean seconds per event of each stage
        (read, inputs, graph, filter, gnn, tracks) and the process's peak memory.
        """
        if options:
            raise TypeError(f"interaction_gnn convert takes no options {sorted(options)}")
        if mode not in (None, "tracks"):
            raise ConfigError(f"interaction_gnn convert mode must be 'tracks', got {mode!r}")
        if device:
            self.to(device)
        prefixes = datamodule.raw_events(input_path)
        frames, stage_seconds = [], []
        n_tracks = 0
        progress = tqdm(prefixes, desc="finding tracks", unit="event")
        for event_id, prefix in progress:
            t0 = time.perf_counter()
            hits, cells = datamodule.read_raw_event(prefix)
            read = time.perf_counter() - t0
            tracks, _, seconds = self._predict(hits, cells)
            stage_seconds.append({"read": read, **seconds})
            progress.set_postfix(
                {k: f"{v:.1f}s" for k, v in stage_seconds[-1].items()}, refresh=False
            )
            n_tracks += int(tracks["track_id"].max()) if len(tracks) else 0
            tracks.insert(0, "event_id", np.full(len(tracks), event_id, dtype=np.int64))
            frames.append(tracks)
        output_path = Path(output_path)
        if output_path.suffix not in (".csv", ".gz"):
            output_path = output_path / "submission.csv"
        table = pd.concat(frames, ignore_index=True)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_csv(table, output_path, output_path.suffix == ".gz", None)
        per_stage = pd.DataFrame(stage_seconds).mean()
        return {
            "n_events": len(prefixes),
            "n_hits": len(table),
            "n_tracks": n_tracks,
            "output": str(output_path),
            **{f"seconds_per_event/{k}": float(v) for k, v in per_stage.items()},
            "seconds_per_event/total": float(per_stage.sum()),
            "peak_memory_gb": peak_memory_gb(),
        }


# -- helpers -----------------------------------------------------------------------------------------
def build_tracks(
    n: int, edges: np.ndarray, scores: np.ndarray, method: str, cfg: Mapping[str, Any]
) -> np.ndarray:
    """Track labels with ``method`` (``walkthrough`` or ``components``) and its cuts."""
    if method == "components":
        return track_building.connected_components(n, edges, scores, cfg["cc_cut"], cfg["min_hits"])
    return track_building.walkthrough(
        n, edges, scores, cfg["cc_cut"], cfg["walk_cut"], cfg["min_hits"]
    )


def _same_particle(particle_id: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    a, b = particle_id[edges[0]], particle_id[edges[1]]
    return (a == b) & (a != 0)


def _in_truth_graph(edges: torch.Tensor, truth_edges: torch.Tensor, n: int) -> torch.Tensor:
    def keys(e: torch.Tensor) -> torch.Tensor:
        return torch.minimum(e[0], e[1]) * n + torch.maximum(e[0], e[1])

    return torch.isin(keys(edges), keys(truth_edges))


def _save_atomic(obj: Any, path: Path) -> None:
    from hepexp.utils.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
