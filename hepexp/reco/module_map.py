"""Module map: graph construction at the granularity of detector modules.

Fitted from training events: the set of (module A, module B) pairs that consecutive truth hits
of particles above ``pt_min`` join (a module is keyed by volume, layer and module id), each with
a window on the edge's track-compatibility features (dphi, z0, phi slope, deta) spanning its
truth edges (trimmed quantiles), widened by a margin; pairs with few truth edges take their
layer pair's window. A new event's hits are sorted by module; every pair of the map
expands into the hits of its two modules (cumulative counts, no loop over hits or modules), and
the windows cut the candidates, in chunks bounded in memory. Hits on modules that no training
event reached fall back on the windows of a :class:`~hepexp.reco.graph_building.LayerPairMap`
(against all hits of the paired layers, both directions).

Same input and output conventions as :class:`~hepexp.reco.graph_building.LayerPairMap`: edges
(2, E) int64, directed from the hit nearer the origin, no duplicates or self-loops; torch on CPU
or GPU; the fitted tables are buffers, saved in the model's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from hepexp.reco.graph_building import (
    _LAYER_KEY,
    _MIN_DR,
    _SLOPE_CLIP,
    _Z0_CLIP,
    EDGE_FEATURES,
    LayerPairMap,
    PairWindowTables,
    _expand_ranges,
    cylindrical,
    edge_geometry,
    orient_and_unique,
    wrap_angle,
)

#: features cut by the module-pair windows (dr and dz are fixed by the two modules' positions)
CUT_FEATURES = ("dphi", "z0", "phi_slope", "deta")
_CUT_COLUMNS = [EDGE_FEATURES.index(f) for f in CUT_FEATURES]
_MODULE_KEY = 1 << 20  # module key = layer key * _MODULE_KEY + module_id
_FIT_KEYS = ("x", "volume_id", "layer_id", "module_id", "pt", "truth_edges")


Ids = torch.Tensor | np.ndarray


def module_key(volume_id: Ids, layer_id: Ids, module_id: Ids) -> Ids:
    """int64 key of each hit's module: (volume_id * 1000 + layer_id) * 2**20 + module_id."""
    lib = torch if isinstance(module_id, torch.Tensor) else np
    module = module_id.long() if lib is torch else np.asarray(module_id, dtype=np.int64)
    if len(module) and (module.min() < 0 or module.max() >= _MODULE_KEY):
        raise ValueError(
            f"ModuleMap: module_id must lie in [0, {_MODULE_KEY}), got "
            f"[{int(module.min())}, {int(module.max())}]"
        )
    if lib is torch:
        layer = volume_id.long() * _LAYER_KEY + layer_id.long()
    else:
        layer = np.asarray(volume_id, np.int64) * _LAYER_KEY + np.asarray(layer_id, np.int64)
    return layer * _MODULE_KEY + module


def _check_event(ev: Mapping[str, np.ndarray], keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in ev]
    if missing:
        raise KeyError(f"ModuleMap: event lacks {missing} (needs {list(keys)})")
    n = len(ev["x"])
    bad = [k for k in keys if k not in ("x", "truth_edges") and len(ev[k]) != n]
    if bad or np.ndim(ev["x"]) != 2 or np.shape(ev["x"])[1] != 3:
        raise ValueError(f"ModuleMap: x must be (n, 3) and {bad} have n = {n} entries")


def _mirrored(
    events: list[Mapping[str, np.ndarray]], src: np.ndarray, dst: np.ndarray, feats: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (module keys ``src`` -> ``dst``, cut features) with their images under z -> -z,
    y -> -y and both; an image is kept when both modules have one (a module whose centre,
    from the hits of ``events``, lies within a third of its nearest neighbour's distance of
    the mirrored centre)."""
    from scipy.spatial import cKDTree

    frames = [
        pd.DataFrame(np.asarray(ev["x"], np.float64), columns=["x", "y", "z"]).assign(
            key=module_key(ev["volume_id"], ev["layer_id"], ev["module_id"])
        )
        for ev in events
    ]
    centre = pd.concat(frames).groupby("key")[["x", "y", "z"]].mean()
    keys, xyz = centre.index.to_numpy(), centre.to_numpy()
    tree = cKDTree(xyz)
    nearest = tree.query(xyz, k=2)[0][:, 1] if len(xyz) > 1 else np.full(len(xyz), np.inf)
    out_src, out_dst, out_feats = [src], [dst], [feats]
    # flips of (dphi, z0, phi_slope, deta): z-mirror flips z0 and deta, y-mirror dphi and slope
    for mirror, flip in (
        ((1, 1, -1), (1, -1, 1, -1)),
        ((1, -1, 1), (-1, 1, -1, 1)),
        ((1, -1, -1), (-1, -1, -1, -1)),
    ):
        dist, idx = tree.query(xyz * np.array(mirror))
        image = pd.Series(np.where(dist <= nearest / 3, keys[idx], -1), index=keys)
        a = image.reindex(src).fillna(-1).to_numpy(np.int64)
        b = image.reindex(dst).fillna(-1).to_numpy(np.int64)
        ok = (a >= 0) & (b >= 0)
        out_src.append(a[ok])
        out_dst.append(b[ok])
        out_feats.append(feats[ok] * np.array(flip))
    return np.concatenate(out_src), np.concatenate(out_dst), np.concatenate(out_feats)


def _group_quantiles(
    values: np.ndarray, first: np.ndarray, count: np.ndarray, trim: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per group of rows (groups start at ``first``, ``count`` rows each) and column: the
    ``trim`` and ``1 - trim`` quantiles of the defined (non-NaN) values, NaN where there are
    none; ``trim`` 0 gives the minimum and maximum."""
    group = np.repeat(np.arange(len(first)), count)
    lo = np.full((len(first), values.shape[1]), np.nan)
    hi = np.full_like(lo, np.nan)
    for col in range(values.shape[1]):
        column = values[:, col]
        order = np.lexsort((column, group))  # NaN sorts last within its group
        defined = np.add.reduceat(~np.isnan(column), first)
        has = defined > 0
        last = np.maximum(defined - 1, 0)
        lo_at = first + np.floor(trim * last).astype(np.int64)
        hi_at = first + np.ceil((1 - trim) * last).astype(np.int64)
        lo[has, col] = column[order[lo_at[has]]]
        hi[has, col] = column[order[hi_at[has]]]
    return lo, hi


class ModuleMap(PairWindowTables):
    """Graph construction from a map of module pairs (see the module docstring).

    Args:
        pt_min: the map holds the module pairs and windows of truth edges of particles with
            pT >= ``pt_min`` GeV.
        trim: a pair's window spans the [``trim``, 1 - ``trim``] quantiles of its ``k`` truth
            edges (mirror images included; the extremes of a well-sampled pair are rare
            outliers that would widen it for every later candidate) ...
        margin: ... widened on each side by ``margin + 1 / k`` times its width ...
        floor: ... plus ``floor * sqrt(min(1, sparse_edges / k))`` times the [1%, 99%]
            spread of the feature over the truth edges of the pair's layer pair.
        sparse_edges, sparse_quantile: a pair with fewer than ``sparse_edges`` truth edges
            takes instead its layer pair's window: the [``sparse_quantile``, 1 -
            ``sparse_quantile``] quantiles of the truth edges of all its module pairs, widened
            by ``margin`` times its width on each side.
        symmetric: also count every truth edge for its mirror images in z and in y (a module's
            image is the module whose centre lies nearest the mirrored centre; with the charge
            flipped, a mirrored track is a track), which quadruples the statistics.
        max_candidates: candidate hit pairs examined at once (bounds memory).
        fallback_events: training events used to fit the fallback (and module centres).
        fallback: settings of the :class:`LayerPairMap` used for hits on modules the training
            events did not reach (its ``pt_min`` defaults to this map's).
    """

    def __init__(
        self,
        pt_min: float = 1.0,
        trim: float = 0.005,
        margin: float = 0.1,
        floor: float = 0.2,
        sparse_edges: int = 16,
        sparse_quantile: float = 0.01,
        symmetric: bool = True,
        max_candidates: int = 4_000_000,
        fallback_events: int = 20,
        fallback: Mapping | None = None,
    ) -> None:
        super().__init__()
        if (
            min(margin, floor) < 0
            or not 0 <= sparse_quantile < 0.5
            or not 0 <= trim < 0.5
            or max_candidates < 1
        ):
            raise ValueError(
                "ModuleMap: need margin, floor >= 0, 0 <= sparse_quantile, trim < 0.5, "
                f"max_candidates >= 1; got {margin}, {floor}, {sparse_quantile}, {trim}, "
                f"{max_candidates}"
            )
        self.pt_min = pt_min
        self.trim = trim
        self.margin = margin
        self.floor = floor
        self.sparse_edges = sparse_edges
        self.sparse_quantile = sparse_quantile
        self.symmetric = symmetric
        self.max_candidates = max_candidates
        self.fallback_events = fallback_events
        self.fallback_cfg = {"pt_min": pt_min, **dict(fallback or {})}
        self.fallback = LayerPairMap(**self.fallback_cfg)
        self._register_tables("module_keys", len(CUT_FEATURES))

    def settings(self) -> dict:
        """What the fitted map depends on (besides the training events)."""
        return {
            "pt_min": self.pt_min,
            "trim": self.trim,
            "margin": self.margin,
            "floor": self.floor,
            "sparse_edges": self.sparse_edges,
            "sparse_quantile": self.sparse_quantile,
            "symmetric": self.symmetric,
            "fallback_events": self.fallback_events,
            "fallback": self.fallback.settings(),
        }

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, events: Iterable[Mapping[str, np.ndarray]]) -> ModuleMap:
        """Learn the module pairs and windows (and the fallback layer-pair map) from events:
        mappings with ``x`` (n, 3) mm, ``volume_id``, ``layer_id``, ``module_id``, ``pt``
        (n,) and ``truth_edges`` (2, E) directed along the particles (the ``graph`` view)."""
        src, dst, feats, kept = [], [], [], []
        for ev in events:
            _check_event(ev, _FIT_KEYS)
            if len(kept) < max(self.fallback_events, 1):
                kept.append(ev)
            edges = np.asarray(ev["truth_edges"], dtype=np.int64).reshape(2, -1)
            edges = edges[:, np.asarray(ev["pt"])[edges[0]] >= self.pt_min]
            key = module_key(ev["volume_id"], ev["layer_id"], ev["module_id"])
            src.append(key[edges[0]])
            dst.append(key[edges[1]])
            x = torch.as_tensor(np.asarray(ev["x"]), dtype=torch.float64)
            e = torch.as_tensor(edges)
            feats.append(edge_geometry(cylindrical(x), e[0], e[1])[:, _CUT_COLUMNS].numpy())
        if not src or sum(len(s) for s in src) == 0:
            raise ValueError(
                f"ModuleMap.fit: no truth edges of particles with pT >= {self.pt_min} GeV in "
                "the training events"
            )
        src_np, dst_np = np.concatenate(src), np.concatenate(dst)
        feats_np = np.concatenate(feats)
        if self.symmetric:
            src_np, dst_np, feats_np = _mirrored(kept, src_np, dst_np, feats_np)
        module_keys = np.unique(np.concatenate([src_np, dst_np]))
        a = np.searchsorted(module_keys, src_np)
        b = np.searchsorted(module_keys, dst_np)
        order = np.lexsort((b, a))
        a, b, feats_np = a[order], b[order], feats_np[order]
        layer_np = np.stack([src_np, dst_np], 1)[order] // _MODULE_KEY
        first = np.flatnonzero(np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
        count = np.diff(np.r_[first, len(a)])
        lo, hi = _group_quantiles(feats_np, first, count, self.trim)

        # per layer pair: the [1%, 99%] spread of each feature (the floor of the widening)
        # and the [q, 1 - q] window that sparse pairs take
        table = pd.DataFrame(feats_np, columns=list(CUT_FEATURES))
        table["la"], table["lb"] = layer_np[:, 0], layer_np[:, 1]
        grouped = table.groupby(["la", "lb"], sort=True)[list(CUT_FEATURES)]
        index = pd.MultiIndex.from_arrays([layer_np[first, 0], layer_np[first, 1]])

        def layer_quantile(q: float) -> np.ndarray:
            return grouped.quantile(q).reindex(index).to_numpy()

        spread = np.nan_to_num(layer_quantile(0.99) - layer_quantile(0.01))
        width = hi - lo
        decay = np.sqrt(np.minimum(1.0, self.sparse_edges / count[:, None]))
        pad = (self.margin + 1.0 / count[:, None]) * width + self.floor * decay * spread
        lo, hi = lo - pad, hi + pad
        # pairs with few edges: their layer pair's window, widened by the margin
        sparse = (count < self.sparse_edges)[:, None]
        layer_lo = layer_quantile(self.sparse_quantile)
        layer_hi = layer_quantile(1 - self.sparse_quantile)
        layer_pad = self.margin * (layer_hi - layer_lo)
        lo = np.where(sparse, layer_lo - layer_pad, lo)
        hi = np.where(sparse, layer_hi + layer_pad, hi)
        lo = np.nan_to_num(lo, nan=-np.inf)  # undefined features leave no constraint
        hi = np.nan_to_num(hi, nan=np.inf)

        self.module_keys = torch.as_tensor(module_keys)
        self.pairs = torch.as_tensor(np.stack([a[first], b[first]], 1), dtype=torch.int64)
        self.lo = torch.as_tensor(lo, dtype=torch.float32)
        self.hi = torch.as_tensor(hi, dtype=torch.float32)
        self.pair_edges = torch.as_tensor(count, dtype=torch.int64)
        self.fallback.fit(kept)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # the fitted tables have data-dependent shapes: take the stored ones
        for name in ("module_keys", "pairs", "lo", "hi", "pair_edges"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- building ---------------------------------------------------------------------------
    def module_index(self, key: torch.Tensor) -> torch.Tensor:
        """Index of each module key in the map; -1 for modules the map does not know."""
        if len(self.module_keys) == 0:
            return torch.full_like(key, -1)
        idx = torch.searchsorted(self.module_keys, key).clamp_max(len(self.module_keys) - 1)
        return torch.where(self.module_keys[idx] == key, idx, torch.full_like(idx, -1))

    def build(self, event: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Edges of an event (or joined batch) given as the ``graph`` view's tensors."""
        missing = [k for k in ("x", "volume_id", "layer_id", "module_id") if k not in event]
        if missing:
            raise KeyError(f"ModuleMap.build: the event lacks {missing}")
        return self(
            event["x"],
            event["volume_id"],
            event["layer_id"],
            event["module_id"],
            event.get("batch"),
        )

    @torch.no_grad()
    def forward(
        self,
        x: torch.Tensor,
        volume_id: torch.Tensor,
        layer_id: torch.Tensor,
        module_id: torch.Tensor,
        batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Candidate edges (2, E) of the hits ``x`` (n, 3) in mm; hits of different ``batch``
        entries (events joined into one graph) are never connected."""
        if not self.is_fitted:
            raise RuntimeError("ModuleMap is not fitted: call fit() on training events")
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"ModuleMap: x must be (n, 3), got {tuple(x.shape)}")
        if not len(volume_id) == len(layer_id) == len(module_id) == n:
            raise ValueError("ModuleMap: x, volume_id, layer_id and module_id differ in length")
        device = x.device
        if batch is None:
            batch = torch.zeros(n, dtype=torch.int64, device=device)
        batch = batch.long().to(device)
        key = module_key(volume_id.to(device), layer_id.to(device), module_id.to(device))
        module = self.module_index(key)
        cyl = cylindrical(x.double())
        found = [self._module_pairs(cyl, module, batch)]
        unseen = torch.nonzero(module < 0).squeeze(1)
        if len(unseen):
            found.append(self._fallback(cyl, key // _MODULE_KEY, batch, unseen))
        return orient_and_unique(torch.cat(found, dim=1), x)

    def _cut(
        self, cyl: dict, a: torch.Tensor, b: torch.Tensor, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates ``a -> b`` of pairs ``p`` inside the pairs' windows, cut feature by
        feature on the survivors (the values of :func:`edge_geometry`, without its stack)."""

        def inside(value: torch.Tensor, col: int) -> torch.Tensor:
            v = value.float()
            return (v >= self.lo[p, col]) & (v <= self.hi[p, col]) | v.isnan()

        dphi = wrap_angle(cyl["phi"][b] - cyl["phi"][a])
        keep = torch.nonzero(inside(dphi, 0)).squeeze(1)
        a, b, p, dphi = a[keep], b[keep], p[keep], dphi[keep]
        r_a, z_a = cyl["r"][a], cyl["z"][a]
        dr = cyl["r"][b] - r_a
        safe_dr = torch.where(dr.abs() < _MIN_DR, torch.full_like(dr, torch.nan), dr)
        z0 = (z_a - r_a * (cyl["z"][b] - z_a) / safe_dr).clamp(-_Z0_CLIP, _Z0_CLIP)
        slope = (dphi / safe_dr).clamp(-_SLOPE_CLIP, _SLOPE_CLIP)
        ok = inside(z0, 1) & inside(slope, 2)
        a, b, p = a[ok], b[ok], p[ok]
        ok = inside(cyl["eta"][b] - cyl["eta"][a], 3)
        return a[ok], b[ok]

    def _module_pairs(self, cyl: dict, module: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Edges between hits of the map's module pairs: every pair expands into (hit of A,
        hit of B) candidates, found from the hits sorted by (event, module)."""
        device = module.device
        n_mod = len(self.module_keys)
        n_batch = int(batch.max()) + 1 if len(batch) else 1
        known = module >= 0
        group = torch.where(known, batch * n_mod + module, torch.full_like(module, -1))
        group_sorted, order = torch.sort(group)
        n_groups = n_batch * n_mod
        count = torch.bincount(group[known], minlength=n_groups)
        start = torch.searchsorted(group_sorted, torch.arange(n_groups, device=device))
        # (event, pair) rows with hits on both modules
        offset = torch.arange(n_batch, device=device).repeat_interleave(len(self.pairs)) * n_mod
        pair = torch.arange(len(self.pairs), device=device).repeat(n_batch)
        g_a = offset + self.pairs[pair, 0]
        g_b = offset + self.pairs[pair, 1]
        n_cand = count[g_a] * count[g_b]
        rows = torch.nonzero(n_cand).squeeze(1)
        pair, g_a, g_b, n_cand = pair[rows], g_a[rows], g_b[rows], n_cand[rows]
        found = [torch.zeros((2, 0), dtype=torch.int64, device=device)]
        if len(rows) == 0:
            return found[0]
        # chunks of whole rows with at most max_candidates candidates (or one row)
        chunk = torch.div(torch.cumsum(n_cand, 0) - 1, self.max_candidates, rounding_mode="floor")
        bounds = torch.unique_consecutive(chunk, return_counts=True)[1].cumsum(0).tolist()
        lo_row = 0
        for hi_row in bounds:
            sl = slice(lo_row, hi_row)
            lo_row = hi_row
            owner, k = _expand_ranges(torch.zeros_like(n_cand[sl]), n_cand[sl])
            width = count[g_b[sl]][owner]
            a = order[start[g_a[sl]][owner] + torch.div(k, width, rounding_mode="floor")]
            b = order[start[g_b[sl]][owner] + k % width]
            p = pair[sl][owner]
            found.append(torch.stack(self._cut(cyl, a, b, p)))
        return torch.cat(found, dim=1)

    def _fallback(
        self, cyl: dict, layer_key: torch.Tensor, batch: torch.Tensor, unseen: torch.Tensor
    ) -> torch.Tensor:
        """Edges of hits on unseen modules: the fallback layer-pair windows against the hits
        of the paired layers within the dphi window (the unseen hit at either end of a pair)."""
        device = batch.device
        fb = self.fallback
        empty = torch.zeros((2, 0), dtype=torch.int64, device=device)
        if not fb.is_fitted:
            return empty
        n_lay = len(fb.layer_keys)
        idx = torch.searchsorted(fb.layer_keys, layer_key).clamp_max(n_lay - 1)
        layer = torch.where(fb.layer_keys[idx] == layer_key, idx, torch.full_like(idx, -1))
        unseen = unseen[layer[unseen] >= 0]
        if len(unseen) == 0:
            return empty
        phi = cyl["phi"]
        # hits sorted by (event, layer, phi): a dphi window is one or two ranges of this order
        group = torch.where(layer >= 0, batch * n_lay + layer, torch.full_like(layer, -1))
        sort_key, order = torch.sort(group.double() * 8.0 + (phi + math.pi))
        found = [empty]
        for side in (0, 1):  # the unseen hit as the pair's source, then as its target
            p_idx = torch.nonzero(fb.pairs[:, side][None, :] == layer[unseen][:, None])
            q_hit, q_pair = unseen[p_idx[:, 0]], p_idx[:, 1]
            # window of the other hit's phi: phi_u + dphi (source) or phi_u - dphi (target)
            d_lo, d_hi = fb.lo[q_pair, 1].double(), fb.hi[q_pair, 1].double()
            lo = phi[q_hit] + (d_lo if side == 0 else -d_hi)
            width = d_hi - d_lo
            full = width >= 2 * math.pi
            lo = torch.where(full, torch.full_like(lo, -math.pi), wrap_angle(lo))
            hi = lo + torch.where(full, torch.full_like(width, 2 * math.pi), width)
            base = (batch[q_hit] * n_lay + fb.pairs[q_pair, 1 - side]).double() * 8.0
            wraps = hi > math.pi
            r_query = torch.cat(
                [torch.arange(len(q_hit), device=device), torch.nonzero(wraps)[:, 0]]
            )
            r_lo = torch.cat([lo, torch.full_like(lo[wraps], -math.pi)])
            r_hi = torch.cat([hi.clamp_max(math.pi), hi[wraps] - 2 * math.pi])
            r_base = torch.cat([base, base[wraps]])
            first = torch.searchsorted(sort_key, r_base + r_lo + math.pi)
            n_cand = torch.searchsorted(sort_key, r_base + r_hi + math.pi, right=True) - first
            n_cand = n_cand.clamp_min(0)
            chunk = torch.div(
                torch.cumsum(n_cand, 0) - 1, self.max_candidates, rounding_mode="floor"
            )
            bounds = torch.unique_consecutive(chunk, return_counts=True)[1].cumsum(0).tolist()
            lo_row = 0
            for hi_row in bounds:
                sl = slice(lo_row, hi_row)
                lo_row = hi_row
                owner, pos = _expand_ranges(first[sl], n_cand[sl])
                query = r_query[sl][owner]
                u, v = q_hit[query], order[pos]
                a, b = (u, v) if side == 0 else (v, u)
                p = q_pair[query]
                feats = edge_geometry(cyl, a, b).float()
                inside = ((feats >= fb.lo[p]) & (feats <= fb.hi[p]) | feats.isnan()).all(dim=1)
                found.append(torch.stack([a[inside], b[inside]]))
        return torch.cat(found, dim=1)
