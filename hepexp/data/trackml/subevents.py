"""Sub-events and selections of TrackML events (pandas frames in, the same frames out).

``sample_subevent`` draws a random subset of an event's particles, as in the "TML:a-b"
datasets of the Transformer regressor (sub-events of a..b particles drawn from real events,
noise dropped). ``select`` applies the usual cuts (detector volumes, pT, hits per particle,
noise). Both keep row order and the original ids, restrict ``hits``, ``truth``, ``particles``
and optionally ``cells`` consistently, and renormalise ``truth.weight`` to sum 1 when present.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd

from hepexp.metrics.trackml import lookup_rows


class SubEvent(NamedTuple):
    """The frames of a (sub-)event; ``cells`` is None when none were given."""

    hits: pd.DataFrame
    particles: pd.DataFrame
    truth: pd.DataFrame
    cells: pd.DataFrame | None = None


def _ids(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    if column not in df.columns:
        raise ValueError(f"{name}: missing column {column!r}")
    values = df[column].to_numpy()
    if values.dtype.kind not in "iu":
        raise ValueError(f"{name}.{column}: expected int64 ids, got dtype {values.dtype}")
    return values.astype(np.int64, copy=False)


def _restrict(
    hits: pd.DataFrame,
    particles: pd.DataFrame,
    truth: pd.DataFrame,
    cells: pd.DataFrame | None,
    keep_truth: np.ndarray,
    keep_particles: np.ndarray,
    renormalise: bool,
) -> SubEvent:
    """Frames restricted to the kept truth rows (their hit ids) and kept particle rows."""
    kept_ids = _ids(truth, "hit_id", "truth")[keep_truth]
    new_truth = truth[keep_truth].reset_index(drop=True)
    if renormalise and "weight" in new_truth.columns:
        total = new_truth["weight"].sum()
        if total > 0:
            new_truth["weight"] = new_truth["weight"] / total
    new_hits = hits[np.isin(_ids(hits, "hit_id", "hits"), kept_ids)].reset_index(drop=True)
    new_cells = None
    if cells is not None:
        new_cells = cells[np.isin(_ids(cells, "hit_id", "cells"), kept_ids)].reset_index(drop=True)
    new_particles = particles[keep_particles].reset_index(drop=True)
    return SubEvent(new_hits, new_particles, new_truth, new_cells)


def _check_aligned(hits: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Row of each truth hit in ``hits``; raises if the hit ids differ."""
    rows = lookup_rows(_ids(hits, "hit_id", "hits"), _ids(truth, "hit_id", "truth"))
    if (rows < 0).any() or len(hits) != len(truth):
        raise ValueError("hits/truth: the two frames must hold the same hit_ids")
    return rows


def sample_subevent(
    hits: pd.DataFrame,
    particles: pd.DataFrame,
    truth: pd.DataFrame,
    n_particles: int | tuple[int, int],
    rng: np.random.Generator | int,
    keep_noise: bool = False,
    cells: pd.DataFrame | None = None,
) -> SubEvent:
    """A sub-event made of a uniformly random subset of the particles that have hits.

    Args:
        hits, particles, truth: one event's frames (``truth`` and ``hits`` hold the same hits).
        n_particles: number of particles, or ``(a, b)`` for a count drawn uniformly from
            ``a..b`` inclusive.
        rng: numpy Generator (or seed); the result is a deterministic function of it.
        keep_noise: also keep a random share of the noise hits, the same share of noise as
            the kept particles' share of particle hits (so the noise fraction is preserved).
        cells: optional cells frame, restricted to the kept hits.

    Returns:
        :class:`SubEvent` with rows in the original order and the original ids;
        ``particles`` holds just the drawn particles; ``truth.weight`` renormalised to sum 1.

    Raises:
        ValueError: bad ``n_particles`` or more particles requested than have hits.
    """
    rng = np.random.default_rng(rng)
    _check_aligned(hits, truth)
    pid = _ids(truth, "particle_id", "truth")
    candidates = np.unique(pid[pid != 0])  # sorted: independent of row order
    if isinstance(n_particles, tuple | list):
        if len(n_particles) != 2 or not 0 < n_particles[0] <= n_particles[1]:
            raise ValueError(f"n_particles: expected (a, b) with 0 < a <= b, got {n_particles}")
        n = int(rng.integers(n_particles[0], n_particles[1] + 1))
    else:
        n = int(n_particles)
        if n <= 0:
            raise ValueError(f"n_particles: expected a positive count, got {n_particles}")
    if n > len(candidates):
        raise ValueError(
            f"n_particles: requested {n} particles but the event has only {len(candidates)} "
            "particles with hits"
        )
    chosen = rng.choice(candidates, size=n, replace=False)
    keep = np.isin(pid, chosen)
    if keep_noise:
        noise_rows = np.flatnonzero(pid == 0)
        n_particle_hits = int((pid != 0).sum())
        k = int(round(len(noise_rows) * keep.sum() / n_particle_hits)) if n_particle_hits else 0
        keep[rng.choice(noise_rows, size=min(k, len(noise_rows)), replace=False)] = True
    keep_particles = np.isin(_ids(particles, "particle_id", "particles"), chosen)
    return _restrict(hits, particles, truth, cells, keep, keep_particles, renormalise=True)


def select(
    hits: pd.DataFrame,
    particles: pd.DataFrame,
    truth: pd.DataFrame,
    volumes: Iterable[int] | None = None,
    pt_min: float | None = None,
    min_hits: int | None = None,
    remove_noise: bool = False,
    cells: pd.DataFrame | None = None,
    renormalise: bool = True,
) -> SubEvent:
    """Apply event cuts, in this order: volumes, noise, pT, hits per particle.

    Args:
        volumes: keep only hits in these volume_ids (e.g. the barrel ``(8, 13, 17)``).
        pt_min: drop particles (and their hits) with transverse momentum < pt_min GeV.
        min_hits: drop particles (and their hits) with fewer hits left after the volume cut.
        remove_noise: drop noise hits (particle_id 0); otherwise noise is kept (only the
            volume cut applies to it).
        renormalise: rescale ``truth.weight`` to sum 1 over the kept hits.

    Returns:
        :class:`SubEvent`; ``particles`` keeps the rows that pass ``pt_min`` and ``min_hits``
        (with ``min_hits`` None, also particles left without hits).
    """
    rows = _check_aligned(hits, truth)
    pid = _ids(truth, "particle_id", "truth")
    ppid = _ids(particles, "particle_id", "particles")
    keep = np.ones(len(truth), dtype=bool)
    if volumes is not None:
        if "volume_id" not in hits.columns:
            raise ValueError("hits: missing column 'volume_id' needed for the volume cut")
        keep &= np.isin(hits["volume_id"].to_numpy()[rows], np.asarray(list(volumes)))
    if remove_noise:
        keep &= pid != 0
    keep_particles = np.ones(len(particles), dtype=bool)
    if pt_min is not None:
        for c in ("px", "py"):
            if c not in particles.columns:
                raise ValueError(f"particles: missing column {c!r} needed for the pT cut")
        pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))
        keep_particles &= pt >= pt_min
        keep &= (pid == 0) | np.isin(pid, ppid[keep_particles])
    if min_hits is not None:
        counts = pd.Series(pid[keep & (pid != 0)]).value_counts()
        enough = counts.index[counts.to_numpy() >= min_hits].to_numpy()
        keep_particles &= np.isin(ppid, enough)
        keep &= (pid == 0) | np.isin(pid, enough)
    return _restrict(hits, particles, truth, cells, keep, keep_particles, renormalise)
