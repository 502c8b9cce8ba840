"""Track building from scored edges: connected components and a junction-aware walkthrough.

Both take a graph of ``n_nodes`` hits with directed edges (2, E) (inner hit -> outer hit, as
:mod:`hepexp.reco.graph_building` gives them) and an edge score in [0, 1]; they return one
track label per hit, -1 for hits in no track. Vectorised with numpy/scipy: the walkthrough's
longest-path search is a relaxation over all edges at once, repeated once per hit along the
longest path, and each round extracts one track from every connected component.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _components


def _check(n_nodes: int, edges: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(edges)
    scores = np.asarray(scores, dtype=np.float64)
    if edges.ndim != 2 or edges.shape[0] != 2 or edges.dtype.kind not in "iu":
        raise ValueError(
            f"edges: expected an integer array (2, E), got {edges.dtype} {edges.shape}"
        )
    if scores.shape != (edges.shape[1],):
        raise ValueError(f"scores: expected shape ({edges.shape[1]},), got {scores.shape}")
    if edges.size and (edges.min() < 0 or edges.max() >= n_nodes):
        raise ValueError(f"edges: node indices must be in [0, {n_nodes})")
    return edges.astype(np.int64, copy=False), scores


def _component_labels(n_nodes: int, edges: np.ndarray) -> np.ndarray:
    graph = coo_matrix(
        (np.ones(edges.shape[1], dtype=np.int8), (edges[0], edges[1])), shape=(n_nodes, n_nodes)
    )
    return _components(graph, directed=False)[1].astype(np.int64)


def _relabel(labels: np.ndarray, min_hits: int) -> np.ndarray:
    """Labels of groups with >= min_hits hits renumbered 0.., others -1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    ok = labels >= 0
    if not ok.any():
        return out
    uniq, inverse, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    big = counts >= min_hits
    new_id = np.where(big, np.cumsum(big) - 1, -1)
    out[ok] = new_id[inverse]
    return out


def connected_components(
    n_nodes: int, edges: np.ndarray, scores: np.ndarray, cut: float = 0.5, min_hits: int = 1
) -> np.ndarray:
    """Tracks = connected components of the edges with score > ``cut``.

    Returns (n_nodes,) int64 labels 0.. for components with >= ``min_hits`` hits and at least
    one edge; -1 for other hits (isolated hits never form a track).
    """
    edges, scores = _check(n_nodes, edges, scores)
    kept = edges[:, scores > cut]
    labels = _component_labels(n_nodes, kept)
    degree = np.bincount(kept.ravel(), minlength=n_nodes)
    labels[degree == 0] = -1
    return _relabel(labels, max(min_hits, 2))


def _longest_paths(
    n_nodes: int, alive: np.ndarray, edges: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Number of hits on the longest path starting at each node (edges among ``alive`` nodes),
    and the successor on it (-1 at the end); ties go to the higher-scored edge."""
    use = alive[edges[0]] & alive[edges[1]]
    src, dst, sc = edges[0, use], edges[1, use], scores[use]
    length = np.where(alive, 1, 0).astype(np.int64)
    for _ in range(n_nodes):  # at most the longest path's length iterations (a DAG)
        candidate = np.ones(n_nodes, dtype=np.int64)
        np.maximum.at(candidate, src, length[dst] + 1)
        candidate = np.where(alive, candidate, 0)
        if np.array_equal(candidate, length):
            break
        length = candidate
    nxt = np.full(n_nodes, -1, dtype=np.int64)
    if len(src):
        order = np.lexsort((sc, length[dst], src))  # the last per src is its best successor
        last = order[np.r_[src[order][1:] != src[order][:-1], True]]
        nxt[src[last]] = dst[last]
    return length, nxt


def walkthrough(
    n_nodes: int,
    edges: np.ndarray,
    scores: np.ndarray,
    cc_cut: float = 0.5,
    walk_cut: float = 0.3,
    min_hits: int = 3,
) -> np.ndarray:
    """Junction-aware track building.

    1. Components of the edges with score > ``cc_cut`` that are simple chains (every hit has
       at most one incoming and one outgoing edge) and have >= ``min_hits`` hits are tracks.
    2. Among the remaining hits, over edges with score > ``walk_cut`` (directed inner ->
       outer, so the graph is acyclic), each round takes in every connected component the
       longest path (the most hits; at a junction, the branch that leads to the longest path,
       ties to the higher-scored edge) as a track and removes its hits, until no path of
       ``min_hits`` hits is left.

    Returns (n_nodes,) int64 track labels, -1 for hits in no track.
    """
    edges, scores = _check(n_nodes, edges, scores)
    labels = np.full(n_nodes, -1, dtype=np.int64)
    next_label = 0

    # 1. clean chains
    strong = edges[:, scores > cc_cut]
    comp = _component_labels(n_nodes, strong)
    indeg = np.bincount(strong[1], minlength=n_nodes)
    outdeg = np.bincount(strong[0], minlength=n_nodes)
    n_comp = int(comp.max()) + 1 if n_nodes else 0
    size = np.bincount(comp, minlength=n_comp)
    branching = np.zeros(n_comp, dtype=bool)
    np.logical_or.at(branching, comp, (indeg > 1) | (outdeg > 1))
    chain = ~branching[comp] & (size[comp] >= min_hits)
    if chain.any():
        chain_ids = _relabel(np.where(chain, comp, -1), 1)
        labels[chain] = chain_ids[chain]
        next_label = int(chain_ids.max()) + 1

    # 2. walk the rest
    alive = labels < 0
    weak = edges[:, scores > walk_cut]
    weak = weak[:, alive[weak[0]] & alive[weak[1]]]
    if weak.shape[1] == 0:
        return labels
    wsc = scores[scores > walk_cut]
    wsc = wsc[alive[edges[0, scores > walk_cut]] & alive[edges[1, scores > walk_cut]]]
    alive = np.zeros(n_nodes, dtype=bool)
    alive[weak.ravel()] = True
    comp = _component_labels(n_nodes, weak)
    while alive.any():
        length, nxt = _longest_paths(n_nodes, alive, weak, wsc)
        cand = np.flatnonzero(alive)
        # per component: the start of its longest path (lowest index on ties)
        order = np.lexsort((cand, -length[cand], comp[cand]))
        first = order[np.r_[True, comp[cand][order][1:] != comp[cand][order][:-1]]]
        starts = cand[first]
        starts = starts[length[starts] >= min_hits]
        if len(starts) == 0:
            break
        node = starts
        track = np.arange(next_label, next_label + len(starts))
        next_label += len(starts)
        while len(node):
            labels[node] = track
            alive[node] = False
            step = nxt[node]
            node, track = step[step >= 0], track[step >= 0]
    return labels
