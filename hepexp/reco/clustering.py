"""Per-hit predictions -> track labels with HDBSCAN, for many events in parallel.

Events are independent, so they are clustered in chunks by ``joblib`` worker processes
(``n_jobs``; 1 runs in this process). :func:`scan_clustering` scores a grid of
``min_cluster_size`` x ``min_samples`` on events with truth (validation events, never test) and
:func:`best_parameters` picks the grid point with the highest mean TrackML score.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from hepexp.metrics.trackml import score_event
from hepexp.utils.parallel import resolve_workers


def cluster_hits(
    features: np.ndarray,
    min_cluster_size: int = 5,
    min_samples: int | None = 2,
    **options: Any,
) -> np.ndarray:
    """HDBSCAN labels (int64, -1 = in no cluster) of the rows of ``features`` (n, k).

    ``options`` go to :class:`hdbscan.HDBSCAN` (e.g. ``cluster_selection_method``,
    ``cluster_selection_epsilon``). Fewer than ``min_cluster_size`` rows form no cluster.
    """
    import hdbscan

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"cluster_hits: expected features of shape (n, k), got {features.shape}")
    if min_cluster_size < 2:
        raise ValueError(f"cluster_hits: min_cluster_size must be >= 2, got {min_cluster_size}")
    n = len(features)
    if n < max(min_cluster_size, 2):
        return np.full(n, -1, dtype=np.int64)
    if not np.isfinite(features).all():
        raise ValueError("cluster_hits: features hold NaN or infinite values")
    samples = None if min_samples is None else int(min(min_samples, n - 1))
    options = {"core_dist_n_jobs": 1, **options}
    model = hdbscan.HDBSCAN(min_cluster_size=int(min_cluster_size), min_samples=samples, **options)
    return model.fit_predict(features).astype(np.int64)


def _chunks(n: int, n_chunks: int) -> list[range]:
    bounds = np.linspace(0, n, max(1, min(n, n_chunks)) + 1).astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _run(n_jobs: int, tasks: list) -> list:
    if n_jobs == 1 or len(tasks) <= 1:
        return [fn(*args) for fn, args, _ in tasks]
    return Parallel(n_jobs=n_jobs)(tasks)


def _cluster_chunk(
    features: list[np.ndarray], params: dict
) -> tuple[list[np.ndarray], list[float]]:
    labels, seconds = [], []
    for f in features:
        start = time.process_time()
        labels.append(cluster_hits(f, **params))
        seconds.append(time.process_time() - start)
    return labels, seconds


def cluster_events(
    features: Sequence[np.ndarray],
    min_cluster_size: int = 5,
    min_samples: int | None = 2,
    n_jobs: int = 1,
    chunks_per_job: int = 4,
    **options: Any,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Cluster every event's hits; return the labels per event and the CPU seconds per event.

    ``n_jobs`` worker processes (-1: all cores) each take chunks of consecutive events.
    """
    params = {"min_cluster_size": min_cluster_size, "min_samples": min_samples, **options}
    n_jobs = resolve_workers(n_jobs, "n_jobs")
    chunks = _chunks(len(features), n_jobs * chunks_per_job)
    tasks = [delayed(_cluster_chunk)([features[i] for i in c], params) for c in chunks]
    labels: list[np.ndarray] = []
    seconds: list[float] = []
    for chunk_labels, chunk_seconds in _run(n_jobs, tasks):
        labels += chunk_labels
        seconds += chunk_seconds
    return labels, np.asarray(seconds)


def _scan_chunk(
    features: list[np.ndarray],
    hit_ids: list[np.ndarray],
    truths: list[pd.DataFrame],
    grid: list[tuple[int, int]],
    options: dict,
) -> np.ndarray:
    scores = np.zeros((len(features), len(grid)))
    for e, (f, ids, truth) in enumerate(zip(features, hit_ids, truths, strict=True)):
        for g, (mcs, ms) in enumerate(grid):
            labels = cluster_hits(f, mcs, ms, **options)
            sub = pd.DataFrame({"hit_id": ids, "track_id": labels})
            scores[e, g] = score_event(truth, sub)
    return scores


def scan_clustering(
    features: Sequence[np.ndarray],
    hit_ids: Sequence[np.ndarray],
    truths: Sequence[pd.DataFrame],
    min_cluster_sizes: Sequence[int],
    min_samples: Sequence[int],
    n_jobs: int = 1,
    **options: Any,
) -> pd.DataFrame:
    """Mean TrackML score of every (min_cluster_size, min_samples) on the given events.

    Args:
        features: per event, the (n, k) clustering features of its hits.
        hit_ids: per event, the hit ids of those rows.
        truths: per event, its truth frame (hit_id, particle_id, weight).

    Returns:
        One row per grid point: min_cluster_size, min_samples, score (mean over events with a
        defined score), score_std.
    """
    if not (len(features) == len(hit_ids) == len(truths)) or not len(features):
        raise ValueError("scan_clustering: need the same, non-zero number of events in each input")
    grid = [(int(a), int(b)) for a in min_cluster_sizes for b in min_samples]
    n_jobs = resolve_workers(n_jobs, "n_jobs")
    chunks = _chunks(len(features), n_jobs * 2)
    tasks = [
        delayed(_scan_chunk)(
            [features[i] for i in c],
            [hit_ids[i] for i in c],
            [truths[i] for i in c],
            grid,
            options,
        )
        for c in chunks
    ]
    scores = np.concatenate(_run(n_jobs, tasks))
    return pd.DataFrame(
        {
            "min_cluster_size": [g[0] for g in grid],
            "min_samples": [g[1] for g in grid],
            "score": np.nanmean(scores, axis=0),
            "score_std": np.nanstd(scores, axis=0),
        }
    )


def best_parameters(scan: pd.DataFrame) -> dict[str, int | float]:
    """The grid point of :func:`scan_clustering` with the highest score (ties: the first)."""
    row = scan.iloc[int(np.nanargmax(scan["score"].to_numpy()))]
    return {
        "min_cluster_size": int(row["min_cluster_size"]),
        "min_samples": int(row["min_samples"]),
        "score": float(row["score"]),
    }


def submission(
    hit_ids: np.ndarray, labels: np.ndarray, event_id: int | None = None
) -> pd.DataFrame:
    """A TrackML submission frame: (event_id,) hit_id, track_id; HDBSCAN's -1 (no cluster)
    becomes a distinct one-hit track per hit, so every hit has a track id >= 0."""
    labels = np.asarray(labels, dtype=np.int64)
    track = labels.copy()
    free = labels < 0
    top = int(labels.max()) + 1 if len(labels) else 0
    track[free] = top + np.arange(int(free.sum()))
    frame = {"hit_id": np.asarray(hit_ids, dtype=np.int64), "track_id": track}
    if event_id is not None:
        frame = {"event_id": np.full(len(track), event_id, dtype=np.int64), **frame}
    return pd.DataFrame(frame)


def options_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The HDBSCAN options of a clustering config (everything but the scan/parallel keys)."""
    skip = {"min_cluster_size", "min_samples", "n_jobs", "scan", "q_scale"}
    return {k: v for k, v in config.items() if k not in skip}
