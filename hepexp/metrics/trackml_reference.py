"""Straightforward per-hit / per-particle loop versions of the TrackML metrics.

Used only by tests and ``benchmarks/trackml_score_speed.py`` to check the vectorised
implementations in :mod:`hepexp.metrics.trackml`; far too slow for production use.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PROPOSAL = [10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0]


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            if xs[i + 1] == xs[i]:
                return ys[i]
            return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[0] if x < xs[0] else ys[-1]


def reference_hit_weights(truth: pd.DataFrame, particles: pd.DataFrame) -> np.ndarray:
    """Phase-2 hit weights, one particle at a time (``particles.nhits`` as track length)."""
    info = {}
    for row in particles.itertuples(index=False):
        info[int(row.particle_id)] = row
    hits_of: dict[int, list[int]] = {}
    for i, p in enumerate(truth["particle_id"].tolist()):
        hits_of.setdefault(int(p), []).append(i)
    tz = truth["tz"].tolist()
    weight = [0.0] * len(truth)
    for p, rows in hits_of.items():
        if p == 0 or p not in info or (p >> 24) & 0xFFF != 0:
            continue
        part = info[p]
        pt = math.hypot(part.px, part.py)
        w_pt = 0.0 if pt < 0.05 else _interp(pt, [0.05, 0.5, 3.0], [0.2, 0.2, 1.0])
        nhits = min(int(part.nhits), 20)
        if nhits < 4:
            continue
        supports = [k * (nhits - 1) / (len(PROPOSAL) - 1) for k in range(len(PROPOSAL))]
        stretched = [_interp(float(j), supports, PROPOSAL) for j in range(nhits)]
        norm = sum(stretched)
        dz = [abs(tz[r] - part.vz) for r in rows]
        for r, d in zip(rows, dz, strict=True):
            below = sum(1 for e in dz if e < d)
            equal = sum(1 for e in dz if e == d)
            ihit = math.floor(below + (equal + 1) / 2 - 1)
            if ihit < 20:
                weight[r] = w_pt * stretched[ihit] / norm
    total = sum(weight)
    return np.array([w / total for w in weight]) if total > 0 else np.array(weight)


def reference_score_event(
    truth: pd.DataFrame, submission: pd.DataFrame, unassigned: int | None = -1
) -> float:
    """TrackML score with Python dicts and loops over hits and tracks."""
    particle_of = dict(zip(truth["hit_id"].tolist(), truth["particle_id"].tolist(), strict=True))
    weight_of = dict(zip(truth["hit_id"].tolist(), truth["weight"].tolist(), strict=True))
    particle_hits: dict[int, int] = {}
    for p in particle_of.values():
        particle_hits[p] = particle_hits.get(p, 0) + 1
    total = sum(weight_of.values())
    if total == 0:
        return float("nan")

    tracks: dict[object, list[int]] = {}
    assigned = set()
    for h, t in zip(submission["hit_id"].tolist(), submission["track_id"].tolist(), strict=True):
        if t != t or (unassigned is not None and t == unassigned):  # NaN or unassigned
            continue
        tracks.setdefault(int(t), []).append(h)
        assigned.add(h)
    for h in particle_of:
        if h not in assigned:
            tracks[("single", h)] = [h]

    score = 0.0
    for hits in tracks.values():
        counts: dict[int, int] = {}
        weights: dict[int, float] = {}
        for h in hits:
            p = particle_of[h]
            counts[p] = counts.get(p, 0) + 1
            weights[p] = weights.get(p, 0.0) + weight_of[h]
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] > len(hits) / 2 and counts[best] > particle_hits[best] / 2:
            score += weights[best]
    return score / total


def reference_efficiencies(
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    submission: pd.DataFrame,
    hits: pd.DataFrame,
    pt_min: float = 0.9,
    min_layers: int = 3,
    max_eta: float = 4.0,
    min_cluster_size: int = 3,
) -> dict:
    """Counts of :func:`hepexp.metrics.trackml.efficiencies`, one hit/cluster at a time."""
    layer_of = {
        int(h): (int(v), int(layer))
        for h, v, layer in zip(hits["hit_id"], hits["volume_id"], hits["layer_id"], strict=True)
    }
    particle_of = {
        int(h): int(p) for h, p in zip(truth["hit_id"], truth["particle_id"], strict=True)
    }
    n_hits: dict[int, int] = {}
    layers: dict[int, set] = {}
    for h, p in particle_of.items():
        n_hits[p] = n_hits.get(p, 0) + 1
        layers.setdefault(p, set()).add(layer_of[h])
    mom = {int(r.particle_id): (r.px, r.py, r.pz) for r in particles.itertuples(index=False)}
    selected = set()
    for p in n_hits:
        if p <= 0 or p not in mom:
            continue
        px, py, pz = mom[p]
        pt = math.hypot(px, py)
        if pt == 0:
            continue
        eta = math.asinh(pz / pt)
        if pt >= pt_min and abs(eta) < max_eta and len(layers[p]) >= min_layers:
            selected.add(p)

    clusters: dict[int, list[int]] = {}
    for h, t in zip(submission["hit_id"], submission["track_id"], strict=True):
        if t == t and t >= 0:
            clusters.setdefault(int(t), []).append(int(h))
    c = dict.fromkeys(
        [
            "n_clusters",
            "n_dm",
            "n_perfect",
            "n_lhc",
            "n_valid_clusters",
            "n_fake",
            "n_matched_clusters",
        ],
        0,
    )
    matched_particles = set()
    for members in clusters.values():
        if len(members) < min_cluster_size:
            continue
        c["n_valid_clusters"] += 1
        counts: dict[int, int] = {}
        for h in members:
            counts[particle_of[h]] = counts.get(particle_of[h], 0) + 1
        best = min(counts, key=lambda p: (-counts[p], p))
        frac = counts[best] / len(members)
        if frac <= 0.5 or best == 0:
            c["n_fake"] += 1
        if best not in selected:
            continue
        c["n_clusters"] += 1
        c["n_dm"] += frac > 0.5 and counts[best] / n_hits[best] > 0.5
        c["n_perfect"] += counts[best] == n_hits[best] and frac > 0.99
        c["n_lhc"] += frac > 0.75
        if frac > 0.5:
            c["n_matched_clusters"] += 1
            matched_particles.add(best)
    c["n_particles"] = len(selected)
    c["n_matched_particles"] = len(matched_particles)
    return c
