"""Model "views" of a TrackML event: pure functions from pandas frames to numpy arrays.

Every function returns plain numpy arrays (or a dict of them), rows in the order of ``hits``
unless stated otherwise. Coordinates are in mm (before scaling), momenta in GeV, ids int64.

- :func:`event_hits` - all hits of an event with per-hit track-parameter targets
  (regressor_flash).
- :func:`track_hits` - per-particle padded hit sequences (vqvae_cond / vqvae_uncond).
- :func:`single_hits` - all hits as independent points (vqvae_uncond, tokenisation).
- :func:`graph_nodes`, :func:`truth_graph`, :func:`node_features`, :func:`edge_truth`,
  :func:`same_particle_edges`, :func:`particle_pt` - hit graphs (interaction_gnn).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hepexp.metrics.trackml import lookup_rows


def _require(df: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; expected at least {columns}")


def _int64(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    values = df[column].to_numpy()
    if values.dtype.kind not in "iu":
        raise ValueError(f"{name}.{column}: expected int64 ids, got dtype {values.dtype}")
    return values.astype(np.int64, copy=False)


def _hit_xyz(hits: pd.DataFrame) -> np.ndarray:
    _require(hits, ["hit_id", "x", "y", "z"], "hits")
    return hits[["x", "y", "z"]].to_numpy(np.float64)


def hit_particles(hits: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """particle_id of every row of ``hits`` (0 = noise); every hit must be in ``truth``."""
    _require(truth, ["hit_id", "particle_id"], "truth")
    rows = lookup_rows(_int64(truth, "hit_id", "truth"), _int64(hits, "hit_id", "hits"))
    if (rows < 0).any():
        missing = _int64(hits, "hit_id", "hits")[rows < 0][:5].tolist()
        raise ValueError(
            f"truth.hit_id: {int((rows < 0).sum())} hits have no truth, e.g. {missing}"
        )
    return _int64(truth, "particle_id", "truth")[rows]


def _particle_rows(particles: pd.DataFrame, pid: np.ndarray, what: str) -> np.ndarray:
    """Row in ``particles`` of each non-zero ``pid`` (-1 for 0); raises on unknown ids."""
    rows = lookup_rows(_int64(particles, "particle_id", "particles"), pid)
    unknown = (rows < 0) & (pid != 0)
    if unknown.any():
        raise ValueError(
            f"particles.particle_id: {what} needs particles {np.unique(pid[unknown])[:5].tolist()}"
            " which are not in particles"
        )
    return np.where(pid != 0, rows, -1)


def event_hits(hits: pd.DataFrame, particles: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """All hits of an event with the track parameters of their particles.

    Returns a dict of arrays over the ``n`` rows of ``hits``:
        x: (n, 3) float32, hit position x, y, z in mm.
        targets: (n, 4) float32, theta, sin(phi), cos(phi), q of the hit's particle, from its
            true momentum in ``particles`` (theta = arccos(pz / p), phi = atan2(py, px));
            all 0 for noise hits.
        particle_id: (n,) int64, 0 for noise.
        hit_id, volume_id, layer_id: (n,) int64.
    """
    xyz = _hit_xyz(hits)
    _require(hits, ["volume_id", "layer_id"], "hits")
    _require(particles, ["particle_id", "px", "py", "pz", "q"], "particles")
    pid = hit_particles(hits, truth)
    prow = _particle_rows(particles, pid, "event_hits")
    real = prow >= 0
    mom = particles[["px", "py", "pz"]].to_numpy(np.float64)[prow[real]]
    p = np.linalg.norm(mom, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.arccos(np.clip(np.where(p > 0, mom[:, 2] / p, 1.0), -1.0, 1.0))
    phi = np.arctan2(mom[:, 1], mom[:, 0])
    targets = np.zeros((len(hits), 4), dtype=np.float32)
    targets[real, 0] = theta
    targets[real, 1] = np.sin(phi)
    targets[real, 2] = np.cos(phi)
    targets[real, 3] = particles["q"].to_numpy(np.float64)[prow[real]]
    return {
        "x": xyz.astype(np.float32),
        "targets": targets,
        "particle_id": pid,
        "hit_id": _int64(hits, "hit_id", "hits").copy(),
        "volume_id": hits["volume_id"].to_numpy().astype(np.int64),
        "layer_id": hits["layer_id"].to_numpy().astype(np.int64),
    }


def particle_pt(hits: pd.DataFrame, particles: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """(n,) float32: transverse momentum (GeV) of each hit's particle; 0 for noise."""
    _require(particles, ["particle_id", "px", "py"], "particles")
    pid = hit_particles(hits, truth)
    prow = _particle_rows(particles, pid, "particle_pt")
    pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))
    return np.where(prow >= 0, pt[np.maximum(prow, 0)], 0.0).astype(np.float32)


def track_hits(
    hits: pd.DataFrame,
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    max_len: int = 32,
    scale: float = 200.0,
    min_hits: int = 6,
) -> dict:
    """Per-particle hit sequences, padded (the VQ-VAE tokenizer's input).

    Each particle with at least ``min_hits`` hits in ``hits`` (noise excluded) gives one track;
    its hits are sorted by distance from the origin (ties by row order). Tracks longer than
    ``max_len`` are truncated to their ``max_len`` hits nearest the origin (``n_hits`` keeps
    the full count). Tracks are ordered by particle_id. Apply volume cuts (e.g.
    :func:`hepexp.data.trackml.subevents.select`) before calling.

    Returns a dict (T tracks, L = ``max_len``):
        x: (T, L, 3) float32, hit positions / ``scale`` (mm / scale), 0 at padding.
        mask: (T, L) bool, True at real hits.
        hit_id, volume_id, layer_id: (T, L) int64, -1 at padding.
        particle_id: (T,) int64; lengths: (T,) int64 (<= L); n_hits: (T,) int64 (untruncated).
        pt, eta: (T,) float32 from the particle momentum (NaN when not in ``particles``);
        q: (T,) float32 charge (NaN when unknown).
    """
    if max_len < 1 or min_hits < 1 or scale <= 0:
        raise ValueError(
            f"track_hits: need max_len >= 1, min_hits >= 1, scale > 0; got "
            f"{max_len}, {min_hits}, {scale}"
        )
    xyz = _hit_xyz(hits)
    _require(hits, ["volume_id", "layer_id"], "hits")
    _require(particles, ["particle_id", "px", "py", "pz", "q"], "particles")
    pid = hit_particles(hits, truth)
    rows = np.flatnonzero(pid != 0)
    ids, code, counts = np.unique(pid[rows], return_inverse=True, return_counts=True)
    good = counts[code] >= min_hits
    rows, code = rows[good], code[good]
    track_ids = ids[counts >= min_hits]
    track_of_code = np.cumsum(counts >= min_hits) - 1
    t = track_of_code[code]
    r = np.linalg.norm(xyz[rows], axis=1)
    order = np.lexsort((r, t))
    rows, t = rows[order], t[order]
    n_tracks = len(track_ids)
    n_hits = np.bincount(t, minlength=n_tracks).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(n_hits)[:-1]]).astype(np.int64)
    pos = np.arange(len(rows)) - starts[t]
    keep = pos < max_len
    rows, t, pos = rows[keep], t[keep], pos[keep]

    x = np.zeros((n_tracks, max_len, 3), dtype=np.float32)
    x[t, pos] = (xyz[rows] / scale).astype(np.float32)
    mask = np.zeros((n_tracks, max_len), dtype=bool)
    mask[t, pos] = True
    out = {"x": x, "mask": mask}
    for name, values in (
        ("hit_id", _int64(hits, "hit_id", "hits")),
        ("volume_id", hits["volume_id"].to_numpy().astype(np.int64)),
        ("layer_id", hits["layer_id"].to_numpy().astype(np.int64)),
    ):
        padded = np.full((n_tracks, max_len), -1, dtype=np.int64)
        padded[t, pos] = values[rows]
        out[name] = padded
    prow = lookup_rows(_int64(particles, "particle_id", "particles"), track_ids)
    known = prow >= 0
    mom = np.full((n_tracks, 3), np.nan)
    mom[known] = particles[["px", "py", "pz"]].to_numpy(np.float64)[prow[known]]
    q = np.full(n_tracks, np.nan)
    q[known] = particles["q"].to_numpy(np.float64)[prow[known]]
    pt = np.hypot(mom[:, 0], mom[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.arcsinh(mom[:, 2] / pt)
    out.update(
        particle_id=track_ids.astype(np.int64),
        lengths=np.minimum(n_hits, max_len),
        n_hits=n_hits,
        pt=pt.astype(np.float32),
        eta=eta.astype(np.float32),
        q=q.astype(np.float32),
    )
    return out


def single_hits(
    hits: pd.DataFrame, scale: float = 200.0, truth: pd.DataFrame | None = None
) -> dict:
    """All hits as independent points.

    Returns a dict over the ``n`` rows of ``hits``: x (n, 3) float32 = position / ``scale``;
    hit_id, volume_id, layer_id (n,) int64; with ``truth``, also particle_id (n,) int64 (0 =
    noise).
    """
    if scale <= 0:
        raise ValueError(f"single_hits: scale must be > 0, got {scale}")
    xyz = _hit_xyz(hits)
    _require(hits, ["volume_id", "layer_id"], "hits")
    out = {
        "x": (xyz / scale).astype(np.float32),
        "hit_id": _int64(hits, "hit_id", "hits").copy(),
        "volume_id": hits["volume_id"].to_numpy().astype(np.int64),
        "layer_id": hits["layer_id"].to_numpy().astype(np.int64),
    }
    if truth is not None:
        out["particle_id"] = hit_particles(hits, truth)
    return out


def truth_graph(hits: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame) -> np.ndarray:
    """Truth edges: each particle's hits ordered by distance from its production vertex
    (vx, vy, vz), consecutive hits connected (noise excluded).

    Returns:
        (2, E) int64 array of row indices into ``hits``, directed from the hit nearer the
        vertex to the next one; E = sum over particles of (hits - 1). Edges are grouped by
        particle (ascending particle_id), in order along each particle.
    """
    xyz = _hit_xyz(hits)
    _require(particles, ["particle_id", "vx", "vy", "vz"], "particles")
    pid = hit_particles(hits, truth)
    prow = _particle_rows(particles, pid, "truth_graph")
    rows = np.flatnonzero(pid != 0)
    vertex = particles[["vx", "vy", "vz"]].to_numpy(np.float64)[prow[rows]]
    dist = np.linalg.norm(xyz[rows] - vertex, axis=1)
    order = np.lexsort((dist, pid[rows]))
    rows = rows[order]
    same = pid[rows[1:]] == pid[rows[:-1]]
    return np.stack([rows[:-1][same], rows[1:][same]]).astype(np.int64)


def node_features(hits: pd.DataFrame, cells: pd.DataFrame | None = None) -> np.ndarray:
    """Exa.TrkX node features, one row per hit.

    Returns:
        (n, 3) float32 = r / 1000, phi / pi, z / 1000 (r, z in mm; r transverse), or with
        ``cells`` (n, 5) float32 adding the number of cells and the summed cell charge
        (``value``) of each hit (0 for hits without cells).
    """
    xyz = _hit_xyz(hits)
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    columns = [r / 1000.0, phi / np.pi, xyz[:, 2] / 1000.0]
    if cells is not None:
        _require(cells, ["hit_id", "value"], "cells")
        rows = lookup_rows(_int64(hits, "hit_id", "hits"), _int64(cells, "hit_id", "cells"))
        if (rows < 0).any():
            raise ValueError("cells.hit_id: some cells belong to hits not in hits")
        columns.append(np.bincount(rows, minlength=len(hits)).astype(np.float64))
        columns.append(
            np.bincount(rows, weights=cells["value"].to_numpy(np.float64), minlength=len(hits))
        )
    return np.stack(columns, axis=1).astype(np.float32)


def graph_nodes(hits: pd.DataFrame, cells: pd.DataFrame | None = None) -> dict:
    """The nodes of the hit graph, from the hits (and cells) alone: what the interaction GNN
    reads, in training and in inference.

    Returns a dict over the ``n`` rows of ``hits``: features (n, 3 or 5) float32
    (:func:`node_features`), x (n, 3) float32 position in mm, and hit_id, volume_id, layer_id,
    module_id (n,) int64.
    """
    xyz = _hit_xyz(hits)
    _require(hits, ["volume_id", "layer_id", "module_id"], "hits")
    return {
        "features": node_features(hits, cells),
        "x": xyz.astype(np.float32),
        "hit_id": _int64(hits, "hit_id", "hits").copy(),
        **{k: hits[k].to_numpy().astype(np.int64) for k in ("volume_id", "layer_id", "module_id")},
    }


def _edge_array(edges: np.ndarray, n_hits: int) -> np.ndarray:
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[0] != 2 or edges.dtype.kind not in "iu":
        raise ValueError(
            f"edges: expected an integer array of shape (2, E), got {edges.dtype} {edges.shape}"
        )
    if edges.size and (edges.min() < 0 or edges.max() >= n_hits):
        raise ValueError(f"edges: row indices must be in [0, {n_hits})")
    return edges.astype(np.int64, copy=False)


def same_particle_edges(edges: np.ndarray, hits: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """(E,) bool: both ends of the edge (rows of ``hits``) belong to the same non-noise
    particle."""
    edges = _edge_array(edges, len(hits))
    pid = hit_particles(hits, truth)
    return (pid[edges[0]] == pid[edges[1]]) & (pid[edges[0]] != 0)


def edge_truth(
    edges: np.ndarray, hits: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame
) -> np.ndarray:
    """(E,) bool: the edge joins two hits of the same non-noise particle that are consecutive
    in :func:`truth_graph` (either direction). ``particles`` supplies the production vertices
    that order the hits; :func:`same_particle_edges` is the looser flag."""
    edges = _edge_array(edges, len(hits))
    true = truth_graph(hits, truth, particles)
    n = np.int64(len(hits))

    def keys(e: np.ndarray) -> np.ndarray:
        return np.minimum(e[0], e[1]) * n + np.maximum(e[0], e[1])

    return np.isin(keys(edges), keys(true)) & (edges[0] != edges[1])
