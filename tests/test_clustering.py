"""HDBSCAN tracking: labels, parallel clustering, the parameter scan, submissions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hepexp.metrics.trackml import score_event
from hepexp.reco.clustering import (
    best_parameters,
    cluster_events,
    cluster_hits,
    options_of,
    scan_clustering,
    submission,
)


def blobs(rng: np.random.Generator, n_tracks: int = 12, spread: float = 0.01):
    """Predictions of a perfect-ish regressor: one tight blob per particle in 4D."""
    centres = rng.uniform(-1, 1, (n_tracks, 4))
    sizes = rng.integers(6, 14, n_tracks)
    particle = np.repeat(np.arange(1, n_tracks + 1), sizes)
    features = centres[particle - 1] + rng.normal(0, spread, (len(particle), 4))
    hit_id = rng.permutation(len(particle)).astype(np.int64) + 1
    truth = pd.DataFrame(
        {"hit_id": hit_id, "particle_id": particle.astype(np.int64), "weight": 1.0}
    )
    return features, hit_id, truth


def test_cluster_hits_recovers_separated_tracks() -> None:
    features, hit_id, truth = blobs(np.random.default_rng(1))
    labels = cluster_hits(features, min_cluster_size=5, min_samples=2)
    assert labels.dtype == np.int64
    sub = pd.DataFrame({"hit_id": hit_id, "track_id": labels})
    assert score_event(truth, sub) == pytest.approx(1.0)
    assert len(np.unique(labels)) == 12


def test_cluster_hits_small_and_bad_inputs() -> None:
    rng = np.random.default_rng(0)
    assert cluster_hits(np.zeros((0, 4))).shape == (0,)
    assert (cluster_hits(rng.random((4, 4)), min_cluster_size=5) == -1).all()
    # min_samples larger than the event is clamped, not an error
    assert cluster_hits(rng.random((6, 4)), min_cluster_size=2, min_samples=50).shape == (6,)
    with pytest.raises(ValueError, match="NaN"):
        cluster_hits(np.full((10, 4), np.nan))
    with pytest.raises(ValueError, match="min_cluster_size"):
        cluster_hits(rng.random((10, 4)), min_cluster_size=1)
    with pytest.raises(ValueError, match=r"\(n, k\)"):
        cluster_hits(rng.random(10))


def test_cluster_events_parallel_equals_serial() -> None:
    rng = np.random.default_rng(2)
    events = [blobs(rng, n_tracks=int(rng.integers(3, 15)), spread=0.05)[0] for _ in range(9)]
    serial, seconds = cluster_events(events, 5, 2, n_jobs=1)
    parallel, _ = cluster_events(events, 5, 2, n_jobs=2)
    assert len(serial) == len(parallel) == 9
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
    assert seconds.shape == (9,) and (seconds >= 0).all()
    with pytest.raises(ValueError, match="n_jobs"):
        cluster_events(events, n_jobs=0)


def test_scan_finds_the_best_grid_point() -> None:
    rng = np.random.default_rng(3)
    events = [blobs(rng, spread=0.03) for _ in range(4)]
    # tracks of 6..13 hits: clusters of >= 20 hits merge tracks, so hardly any is good
    scan = scan_clustering(
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        min_cluster_sizes=[4, 20],
        min_samples=[1, 2],
        n_jobs=2,
    )
    assert list(scan.columns) == ["min_cluster_size", "min_samples", "score", "score_std"]
    assert len(scan) == 4
    assert (scan.loc[scan.min_cluster_size == 20, "score"] < 0.1).all()
    assert (scan.loc[scan.min_cluster_size == 4, "score"] > 0.95).all()
    best = best_parameters(scan)
    assert best["min_cluster_size"] == 4
    assert best["score"] == scan["score"].max()


def test_submission_gives_unclustered_hits_their_own_tracks() -> None:
    sub = submission(np.array([10, 11, 12, 13]), np.array([0, -1, 0, -1]), event_id=7)
    assert list(sub.columns) == ["event_id", "hit_id", "track_id"]
    assert sub.event_id.tolist() == [7] * 4
    assert sub.track_id.tolist()[0] == sub.track_id.tolist()[2] == 0
    assert len(set(sub.track_id)) == 3 and (sub.track_id >= 0).all()


def test_options_of_drops_non_hdbscan_keys() -> None:
    config = {
        "min_cluster_size": 5,
        "min_samples": None,
        "n_jobs": 2,
        "q_scale": 0.5,
        "cluster_selection_method": "leaf",
    }
    assert options_of(config) == {"cluster_selection_method": "leaf"}
