"""Graph construction for the Exa.TrkX pipeline: hits -> candidate edges.

Two builders, both torch (CPU or GPU) and vectorised over hits:

- :class:`LayerPairMap`, a geometric rule learned from training events: the pairs of detector
  layers that truth edges join, each with a window on the edge's geometry (dphi, dz, dr, z0,
  phi slope, deta) that holds the truth edges of particles above ``pt_min``. A new event's hits
  in layer A are joined to the hits of layer B that fall in the (A, B) window. This is a module
  map at the granularity of layers: ~200 layer pairs are populated by a few training events,
  where a map of the ~18k modules needs ~160-240 full-size events
  (:class:`~hepexp.reco.module_map.ModuleMap`, for dense events).
- :func:`radius_graph`, the neighbour search of metric learning: pairs of points closer than
  ``r`` in an embedding space (at most ``k`` per point), by blocks of ``torch.cdist``.

Edges come out as a (2, E) int64 tensor of row indices, directed from the hit nearer the
origin to the farther one, without duplicates or self-loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

#: geometric edge features, in this order (mm and rad; a -> b is inner -> outer)
EDGE_FEATURES = ("dr", "dphi", "dz", "z0", "phi_slope", "deta")
_MIN_DR = 0.5  # mm: below this |dr|, z0 and the phi slope are undefined (NaN)
_Z0_CLIP = 1e4  # mm
_SLOPE_CLIP = 1.0  # rad / mm
_LAYER_KEY = 1000  # layer key = volume_id * _LAYER_KEY + layer_id


def cylindrical(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """r, phi, z and pseudorapidity (seen from the origin) of points ``x`` (n, 3) in mm."""
    r = torch.hypot(x[:, 0], x[:, 1])
    return {
        "r": r,
        "phi": torch.atan2(x[:, 1], x[:, 0]),
        "z": x[:, 2],
        "eta": torch.asinh(x[:, 2] / r.clamp_min(1e-6)),
    }


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Angles mapped into [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def edge_geometry(
    cyl: Mapping[str, torch.Tensor], src: torch.Tensor, dst: torch.Tensor
) -> torch.Tensor:
    """(E, 6) features of edges src -> dst, see :data:`EDGE_FEATURES`.

    z0 is where the straight line through both hits crosses r = 0 in the r-z plane; the phi
    slope is dphi / dr; both are clipped, and NaN when |dr| < 0.5 mm (e.g. two hits of a
    track in overlapping modules of one layer).
    """
    r_a, r_b = cyl["r"][src], cyl["r"][dst]
    dr = r_b - r_a
    dphi = wrap_angle(cyl["phi"][dst] - cyl["phi"][src])
    dz = cyl["z"][dst] - cyl["z"][src]
    safe_dr = torch.where(dr.abs() < _MIN_DR, torch.full_like(dr, torch.nan), dr)
    z0 = (cyl["z"][src] - r_a * dz / safe_dr).clamp(-_Z0_CLIP, _Z0_CLIP)
    slope = (dphi / safe_dr).clamp(-_SLOPE_CLIP, _SLOPE_CLIP)
    deta = cyl["eta"][dst] - cyl["eta"][src]
    return torch.stack([dr, dphi, dz, z0, slope, deta], dim=1)


def orient_and_unique(edges: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Edges directed from the hit nearer the origin to the farther one (ties: lower row
    first), duplicates and self-loops removed, sorted by (src, dst)."""
    if edges.numel() == 0:
        return edges.new_zeros((2, 0))
    dist = x.double().norm(dim=1)
    a, b = edges
    a_first = (dist[a] < dist[b]) | ((dist[a] == dist[b]) & (a < b))
    src = torch.where(a_first, a, b)
    dst = torch.where(a_first, b, a)
    keep = src != dst
    n = x.shape[0]
    key = torch.unique(src[keep] * n + dst[keep])
    return torch.stack([key // n, key % n])


def _mirror_layers(centres: pd.DataFrame, tolerance: float = 0.05):
    """A function mapping layer keys to the key of their z-mirror image (itself if none).

    ``centres`` holds the mean r and z of each layer's hits (index: layer key). The mirror of
    a layer is the layer whose mean (r, -z) is nearest, if within ``tolerance`` of the
    layer's distance from the origin.
    """
    keys = centres.index.to_numpy()
    rz = centres[["r", "z"]].to_numpy()
    d = np.linalg.norm(rz[:, None, :] - rz[None, :, :] * np.array([1, -1]), axis=2)
    best = d.argmin(axis=1)
    ok = d[np.arange(len(keys)), best] <= tolerance * np.linalg.norm(rz, axis=1)
    target = np.where(ok, keys[best], keys)
    lookup = pd.Series(target, index=keys)

    def mirror(values: np.ndarray) -> np.ndarray:
        return lookup.reindex(values).to_numpy().astype(np.int64)

    return mirror


def _expand_ranges(start: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ranges [start, start + count): (range index, position) of every element."""
    owner = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
    first = torch.cumsum(count, 0) - count
    pos = start[owner] + torch.arange(len(owner), device=count.device) - first[owner]
    return owner, pos


class PairWindowTables(nn.Module):
    """Fitted tables shared by the pair-window graph builders (:class:`LayerPairMap`,
    :class:`~hepexp.reco.module_map.ModuleMap`): the keys of the detector elements (layers or
    modules), their pairs (P, 2), each pair's feature window ``lo``/``hi`` (P, F) and its
    number of truth edges. Buffers, so they travel in the model's checkpoint."""

    def _register_tables(self, key_name: str, n_features: int) -> None:
        self.register_buffer(key_name, torch.zeros(0, dtype=torch.int64))
        self.register_buffer("pairs", torch.zeros((0, 2), dtype=torch.int64))
        self.register_buffer("lo", torch.zeros((0, n_features)))
        self.register_buffer("hi", torch.zeros((0, n_features)))
        self.register_buffer("pair_edges", torch.zeros(0, dtype=torch.int64))

    @property
    def is_fitted(self) -> bool:
        return len(self.pairs) > 0


class LayerPairMap(PairWindowTables):
    """Geometric graph construction learned from training events (see the module docstring).

    Args:
        pt_min: the windows hold the truth edges of particles with pT >= ``pt_min`` GeV.
        quantile: each window spans the [quantile, 1 - quantile] range of its truth edges,
            widened on both sides by ``margin`` times its width.
        margin: relative widening of the windows of the track-compatibility features (dphi,
            z0, phi slope, deta).
        range_margin: relative widening of the dr and dz windows, which are ranges of
            positions rather than compatibility (a few training events sample them sparsely).
        min_edges: layer pairs with fewer truth edges (of particles above ``pt_min``) in the
            training events are left out.
        symmetric: pool each layer pair with its z-mirror image and both charges (see
            :meth:`fit`).
        max_candidates: pairs examined at once (bounds memory on full events).

    The fitted map is held in buffers, so it travels in the model's checkpoint.
    """

    def __init__(
        self,
        pt_min: float = 0.5,
        quantile: float = 0.002,
        margin: float = 0.05,
        range_margin: float = 0.25,
        min_edges: int = 5,
        symmetric: bool = True,
        max_candidates: int = 4_000_000,
    ) -> None:
        super().__init__()
        if not 0 <= quantile < 0.5 or margin < 0 or range_margin < 0 or min_edges < 1:
            raise ValueError(
                "LayerPairMap: need 0 <= quantile < 0.5, margin >= 0, min_edges >= 1; got "
                f"{quantile}, {margin}, {min_edges}"
            )
        self.pt_min = pt_min
        self.quantile = quantile
        self.margin = margin
        self.range_margin = range_margin
        self.min_edges = min_edges
        self.symmetric = symmetric
        self.max_candidates = max_candidates
        self._register_tables("layer_keys", len(EDGE_FEATURES))

    def settings(self) -> dict:
        """What the fitted map depends on (besides the training events)."""
        return {
            "pt_min": self.pt_min,
            "quantile": self.quantile,
            "margin": self.margin,
            "range_margin": self.range_margin,
            "min_edges": self.min_edges,
            "symmetric": self.symmetric,
        }

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, events: Iterable[Mapping[str, np.ndarray]]) -> LayerPairMap:
        """Learn the layer pairs and windows from events.

        Each event is a mapping with ``x`` (n, 3) mm, ``volume_id``, ``layer_id``, ``pt``
        (n,) (the particle's pT, 0 for noise) and ``truth_edges`` (2, E) directed along the
        particles (as the ``graph`` view gives them).

        With ``symmetric``, every truth edge also counts for the mirror-image layer pair
        (z -> -z: dz, z0 and deta change sign; a layer's mirror is the layer at the opposite
        mean z and the same mean r, found from the hits) and for the opposite charge (dphi and
        the phi slope change sign), which quadruples the statistics of every window. Each side
        of a window is widened by ``margin + 1 / k`` of its width for a pair with ``k`` truth
        edges (the expected gap beyond the extremes of ``k`` samples).
        """
        keys, feats, layer_sums = [], [], []
        for ev in events:
            edges = np.asarray(ev["truth_edges"])
            pt = np.asarray(ev["pt"])
            edges = edges[:, pt[edges[0]] >= self.pt_min]
            layer = np.asarray(ev["volume_id"]) * _LAYER_KEY + np.asarray(ev["layer_id"])
            x = torch.as_tensor(np.asarray(ev["x"]), dtype=torch.float64)
            cyl = cylindrical(x)
            e = torch.as_tensor(edges)
            feats.append(edge_geometry(cyl, e[0], e[1]).numpy())
            keys.append(np.stack([layer[edges[0]], layer[edges[1]]], axis=1))
            layer_sums.append(
                pd.DataFrame({"key": layer, "r": cyl["r"].numpy(), "z": cyl["z"].numpy()})
            )
        if not keys or sum(len(k) for k in keys) == 0:
            raise ValueError(
                f"LayerPairMap.fit: no truth edges of particles with pT >= {self.pt_min} GeV "
                "in the training events"
            )
        keys_np = np.concatenate(keys)
        feats_np = np.concatenate(feats)
        n_copies = 1
        if self.symmetric:
            centres = pd.concat(layer_sums).groupby("key")[["r", "z"]].mean()
            mirror = _mirror_layers(centres)
            flip_z = np.array([1, 1, -1, -1, 1, -1])  # dr, dphi, dz, z0, phi_slope, deta
            flip_q = np.array([1, -1, 1, 1, -1, 1])
            mirrored = np.stack([mirror(keys_np[:, 0]), mirror(keys_np[:, 1])], axis=1)
            keys_np = np.concatenate([keys_np, mirrored, keys_np, mirrored])
            feats_np = np.concatenate(
                [feats_np, feats_np * flip_z, feats_np * flip_q, feats_np * flip_z * flip_q]
            )
            n_copies = 2  # the charge copies add no independent edges
        table = pd.DataFrame(feats_np, columns=list(EDGE_FEATURES))
        table["a"], table["b"] = keys_np[:, 0], keys_np[:, 1]
        grouped = table.groupby(["a", "b"], sort=True)
        count = (grouped.size() // n_copies).to_numpy()
        q_lo = grouped[list(EDGE_FEATURES)].quantile(self.quantile).to_numpy()
        q_hi = grouped[list(EDGE_FEATURES)].quantile(1 - self.quantile).to_numpy()
        keep = count >= self.min_edges
        width = (q_hi - q_lo)[keep]
        base = np.array(
            [self.range_margin if f in ("dr", "dz") else self.margin for f in EDGE_FEATURES]
        )
        margin = base[None, :] + 1.0 / count[keep, None]
        # undefined features (z0, slope of same-radius pairs) leave no constraint
        lo = np.nan_to_num(q_lo[keep] - margin * width, nan=-np.inf)
        hi = np.nan_to_num(q_hi[keep] + margin * width, nan=np.inf)
        pair_keys = np.array(grouped.size().index.to_list(), dtype=np.int64)[keep]
        layer_keys = np.unique(pair_keys)
        pairs = np.searchsorted(layer_keys, pair_keys)
        self.layer_keys = torch.as_tensor(layer_keys)
        self.pairs = torch.as_tensor(pairs, dtype=torch.int64)
        self.lo = torch.as_tensor(lo, dtype=torch.float32)
        self.hi = torch.as_tensor(hi, dtype=torch.float32)
        self.pair_edges = torch.as_tensor(count[keep], dtype=torch.int64)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # the fitted tables have data-dependent shapes: take the stored ones
        for name in ("layer_keys", "pairs", "lo", "hi", "pair_edges"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- building ---------------------------------------------------------------------------
    def layer_index(self, volume_id: torch.Tensor, layer_id: torch.Tensor) -> torch.Tensor:
        """Index of each hit's layer in the map; -1 for layers the map does not know."""
        key = volume_id.long() * _LAYER_KEY + layer_id.long()
        idx = torch.searchsorted(self.layer_keys, key).clamp_max(len(self.layer_keys) - 1)
        return torch.where(self.layer_keys[idx] == key, idx, torch.full_like(idx, -1))

    def build(self, event: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Edges of an event (or joined batch) given as the ``graph`` view's tensors."""
        return self(event["x"], event["volume_id"], event["layer_id"], event.get("batch"))

    @torch.no_grad()
    def forward(
        self,
        x: torch.Tensor,
        volume_id: torch.Tensor,
        layer_id: torch.Tensor,
        batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Candidate edges (2, E) of the hits ``x`` (n, 3) in mm; hits of different ``batch``
        entries (events joined into one graph) are never connected."""
        if not self.is_fitted:
            raise RuntimeError("LayerPairMap is not fitted: call fit() on training events")
        device = x.device
        n = x.shape[0]
        n_layers = len(self.layer_keys)
        layer = self.layer_index(volume_id.to(device), layer_id.to(device))
        batch = torch.zeros(n, dtype=torch.int64, device=device) if batch is None else batch
        cyl = cylindrical(x.double())
        phi = cyl["phi"]

        # hits sorted by (event, layer, phi): a window is a range of this order
        group = batch.long() * n_layers + layer
        sort_key = group.double() * 8.0 + (phi + math.pi)
        known = layer >= 0
        sort_key = torch.where(known, sort_key, torch.full_like(sort_key, -1.0))
        sort_key, order = torch.sort(sort_key)

        # queries: (hit a, map pair p) for every pair starting at a's layer
        src_layer = self.pairs[:, 0]
        pairs_per_layer = torch.bincount(src_layer, minlength=n_layers)
        first_pair = torch.cumsum(pairs_per_layer, 0) - pairs_per_layer
        hits = torch.nonzero(known).squeeze(1)
        q_hit, q_pair = _expand_ranges(first_pair[layer[hits]], pairs_per_layer[layer[hits]])
        q_hit = hits[q_hit]

        # each query's phi window as one or two ranges of the sorted hits (wrapping at +-pi)
        lo = phi[q_hit] + self.lo[q_pair, 1].double()
        width = (self.hi[q_pair, 1] - self.lo[q_pair, 1]).double()
        full = width >= 2 * math.pi
        lo = torch.where(full, torch.full_like(lo, -math.pi), wrap_angle(lo))
        width = torch.where(full, torch.full_like(width, 2 * math.pi), width)
        hi = lo + width
        base = (batch[q_hit].long() * n_layers + self.pairs[q_pair, 1]).double() * 8.0
        wraps = hi > math.pi
        r_query = torch.cat([torch.arange(len(q_hit), device=device), torch.nonzero(wraps)[:, 0]])
        r_lo = torch.cat([lo, torch.full_like(lo[wraps], -math.pi)])
        r_hi = torch.cat([torch.clamp_max(hi, math.pi), hi[wraps] - 2 * math.pi])
        r_base = torch.cat([base, base[wraps]])
        start = torch.searchsorted(sort_key, r_base + r_lo + math.pi)
        end = torch.searchsorted(sort_key, r_base + r_hi + math.pi, right=True)
        count = (end - start).clamp_min(0)

        # candidates in chunks of at most max_candidates, cut on all windows
        found = []
        csum = torch.cumsum(count, 0)
        chunk_id = torch.div(csum - 1, self.max_candidates, rounding_mode="floor")
        bounds = torch.searchsorted(chunk_id, torch.arange(int(chunk_id.max()) + 2, device=device))
        for i in range(len(bounds) - 1):
            sl = slice(int(bounds[i]), int(bounds[i + 1]))
            owner, pos = _expand_ranges(start[sl], count[sl])
            query = r_query[sl][owner]
            a, b = q_hit[query], order[pos]
            p = q_pair[query]
            feats = edge_geometry(cyl, a, b).float()
            inside = ((feats >= self.lo[p]) & (feats <= self.hi[p]) | feats.isnan()).all(dim=1)
            found.append(torch.stack([a[inside], b[inside]]))
        if not found:
            return torch.zeros((2, 0), dtype=torch.int64, device=device)
        return orient_and_unique(torch.cat(found, dim=1), x)


class MetricLearningGraph(nn.Module):
    """Learned graph construction (Exa.TrkX metric learning): an MLP embeds each hit in
    ``emb_dim`` dimensions so that consecutive hits of a particle lie close together; edges
    join hits closer than ``radius`` in the embedding (at most ``knn`` per hit).

    Input per hit: the node features and cos/sin of its azimuth (no wrap-around at +-pi).
    The network is trained by :meth:`loss` (hinge loss on truth pairs, random pairs and hard
    negatives); ``radius`` is a buffer set after training (see the pipeline).
    """

    def __init__(
        self,
        node_features: int,
        emb_dim: int = 8,
        hidden: int = 128,
        layers: int = 3,
        knn: int = 64,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        from hepexp.nn.blocks import mlp

        self.knn = knn
        self.net = mlp(
            [node_features + 2] + [hidden] * layers + [emb_dim], activation, norm="layer"
        )
        self.register_buffer("radius", torch.tensor(float("nan")))

    @property
    def is_fitted(self) -> bool:
        return bool(torch.isfinite(self.radius))

    def embed(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        phi = torch.atan2(x[:, 1], x[:, 0])
        inputs = torch.cat([features, torch.cos(phi)[:, None], torch.sin(phi)[:, None]], dim=1)
        return self.net(inputs.float())

    def loss(
        self,
        event: Mapping[str, torch.Tensor],
        margin: float,
        n_random: int,
        hard_knn: int,
        pt_min: float = 0.0,
    ) -> torch.Tensor:
        """Hinge loss of one event: ``d^2`` for truth-graph pairs (of particles with pT >=
        ``pt_min``), ``relu(margin - d)^2`` for other pairs among ``n_random`` random pairs
        per hit and the ``hard_knn`` nearest neighbours within ``margin`` in the current
        embedding."""
        emb = self.embed(event["features"], event["x"])
        n = len(emb)
        truth = event["truth_edges"]
        truth = truth[:, event["pt"][truth[0]] >= pt_min]
        g = torch.Generator(device="cpu").manual_seed(int(event["event_id"][0]))
        random = torch.randint(0, n, (2, n * n_random), generator=g).to(emb.device)
        hard = radius_graph(emb.detach(), margin, hard_knn, event.get("batch"))
        pairs = torch.cat([random, hard], dim=1)
        pid = event["particle_id"]
        negative = (pid[pairs[0]] != pid[pairs[1]]) | (pid[pairs[0]] == 0)
        pairs = pairs[:, negative & (pairs[0] != pairs[1])]
        d_pos = (emb[truth[0]] - emb[truth[1]]).square().sum(1)
        d_neg = (emb[pairs[0]] - emb[pairs[1]]).square().sum(1).clamp_min(1e-12).sqrt()
        pos = d_pos.sum() / max(truth.shape[1], 1)
        neg = torch.relu(margin - d_neg).square().sum() / max(pairs.shape[1], 1)
        return pos + neg

    def build(self, event: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Edges of an event (or joined batch) given as the ``graph`` view's tensors."""
        if not self.is_fitted:
            raise RuntimeError("MetricLearningGraph is not trained (its radius is unset)")
        with torch.no_grad():
            emb = self.embed(event["features"], event["x"])
            edges = radius_graph(emb, float(self.radius), self.knn, event.get("batch"))
        return orient_and_unique(edges, event["x"])


@torch.no_grad()
def radius_graph(
    emb: torch.Tensor,
    r: float,
    k: int = 1000,
    batch: torch.Tensor | None = None,
    block: int = 4096,
) -> torch.Tensor:
    """Pairs (i, j), i != j, with ``|emb_i - emb_j| < r``, at most the ``k`` nearest j per i,
    within the same ``batch`` entry; (2, E) with i -> j for every such pair (both directions
    appear when both are within each other's k nearest). Blocks of ``block`` query rows keep
    the distance matrix small."""
    n = emb.shape[0]
    device = emb.device
    batch = torch.zeros(n, dtype=torch.int64, device=device) if batch is None else batch
    out = []
    for s in range(0, n, block):
        q = emb[s : s + block]
        d = torch.cdist(q.float(), emb.float())
        d[batch[s : s + block, None] != batch[None, :]] = float("inf")
        rows = torch.arange(s, s + len(q), device=device)
        d[torch.arange(len(q), device=device), rows] = float("inf")
        kk = min(k, n)
        dist, idx = torch.topk(d, kk, dim=1, largest=False)
        keep = dist < r
        src = rows[:, None].expand_as(idx)[keep]
        out.append(torch.stack([src, idx[keep]]))
    if not out:
        return torch.zeros((2, 0), dtype=torch.int64, device=device)
    return torch.cat(out, dim=1)


def edge_metrics(
    edges: torch.Tensor,
    truth_edges: torch.Tensor,
    particle_id: torch.Tensor,
    pt: torch.Tensor,
    n_nodes: int,
    pt_cuts: Iterable[float] = (0.9, 1.0),
) -> dict[str, float]:
    """Counts of a graph against the truth graph, summable over events.

    Returns n_edges, n_true (edges in the truth graph, either direction), n_same_particle
    (edges joining two hits of one particle), n_truth (truth-graph edges), n_truth_found, and
    the same two counts for truth edges of particles with pT >= each cut (keys suffixed
    ``_pt0.9`` ...). :func:`edge_ratios` turns them into efficiency and purity.
    """
    n = int(n_nodes)

    def keys(e: torch.Tensor) -> torch.Tensor:
        return torch.minimum(e[0], e[1]) * n + torch.maximum(e[0], e[1])

    k_graph = torch.unique(keys(edges))
    k_truth = keys(truth_edges)
    truth_found = torch.isin(k_truth, k_graph)
    in_truth = torch.isin(keys(edges), k_truth)
    same = (particle_id[edges[0]] == particle_id[edges[1]]) & (particle_id[edges[0]] != 0)
    out = {
        "n_edges": int(edges.shape[1]),
        "n_true": int(in_truth.sum()),
        "n_same_particle": int(same.sum()),
        "n_truth": int(truth_edges.shape[1]),
        "n_truth_found": int(truth_found.sum()),
    }
    truth_pt = pt[truth_edges[0]]
    for cut in pt_cuts:
        sel = truth_pt >= cut
        out[f"n_truth_pt{cut:g}"] = int(sel.sum())
        out[f"n_truth_found_pt{cut:g}"] = int((truth_found & sel).sum())
    return out


def edge_ratios(counts: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Efficiency (truth edges found) and purity (edges in the truth graph; edges joining one
    particle) from summed :func:`edge_metrics` counts."""

    def div(a: float, b: float) -> float:
        return float(a) / float(b) if b else float("nan")

    out = {
        f"{prefix}efficiency": div(counts["n_truth_found"], counts["n_truth"]),
        f"{prefix}purity": div(counts["n_true"], counts["n_edges"]),
        f"{prefix}purity_same_particle": div(counts["n_same_particle"], counts["n_edges"]),
    }
    for key in counts:
        if key.startswith("n_truth_pt"):
            cut = key[len("n_truth_pt") :]
            out[f"{prefix}efficiency_pt{cut}"] = div(counts[f"n_truth_found_pt{cut}"], counts[key])
    return out
