"""Track building from scored edges: connected components and the junction-aware walkthrough."""

from __future__ import annotations

import numpy as np
import pytest

from hepexp.reco.track_building import connected_components, walkthrough


def _groups(labels: np.ndarray) -> set[frozenset[int]]:
    """Tracks as sets of node indices (label -1 excluded)."""
    return {frozenset(np.flatnonzero(labels == t).tolist()) for t in set(labels.tolist()) - {-1}}


def test_connected_components_cut_and_isolated_hits() -> None:
    # two chains 0-1-2 and 3-4, a weak edge 2-3 joining them, node 5 isolated
    edges = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    scores = np.array([0.9, 0.8, 0.4, 0.95])
    labels = connected_components(6, edges, scores, cut=0.5)
    assert _groups(labels) == {frozenset({0, 1, 2}), frozenset({3, 4})}
    assert labels[5] == -1, "a hit without kept edges is in no track"
    merged = connected_components(6, edges, scores, cut=0.3)
    assert _groups(merged) == {frozenset({0, 1, 2, 3, 4})}
    assert _groups(connected_components(6, edges, scores, cut=0.5, min_hits=3)) == {
        frozenset({0, 1, 2})
    }


def test_walkthrough_splits_a_junction_into_the_longest_paths() -> None:
    # track A: 0-1-2-3-4-5, track B: 6-7-8-9-10; a fake edge 2 -> 8 creates a junction at 2
    # (out-degree 2) and at 8 (in-degree 2); track C: 11-12-13 is a clean chain
    edges = np.array(
        [[0, 1, 2, 3, 4, 6, 7, 8, 9, 2, 11, 12], [1, 2, 3, 4, 5, 7, 8, 9, 10, 8, 12, 13]]
    )
    scores = np.array([0.9, 0.9, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.7, 0.95, 0.95])
    cc = connected_components(14, edges, scores, cut=0.5)
    assert frozenset(range(11)) in _groups(cc), "components merge A and B through the fake edge"
    labels = walkthrough(14, edges, scores, cc_cut=0.5, walk_cut=0.3, min_hits=3)
    assert _groups(labels) == {
        frozenset({0, 1, 2, 3, 4, 5}),
        frozenset({6, 7, 8, 9, 10}),
        frozenset({11, 12, 13}),
    }


def test_walkthrough_prefers_longer_branch_then_higher_score() -> None:
    # 0-1 then a fork at 1: branch 2-3-4 (score 0.6) vs branch 5 (score 0.99)
    edges = np.array([[0, 1, 2, 3, 1], [1, 2, 3, 4, 5]])
    scores = np.array([0.9, 0.6, 0.9, 0.9, 0.99])
    labels = walkthrough(6, edges, scores, cc_cut=0.5, walk_cut=0.3, min_hits=3)
    assert _groups(labels) == {frozenset({0, 1, 2, 3, 4})}, "longest path wins over the score"
    assert labels[5] == -1, "the short leftover branch is no track"
    # equal lengths: 0-1-2 vs 0-1-3, the higher-scored edge decides
    edges = np.array([[0, 1, 1], [1, 2, 3]])
    for s2, s3, winner in ((0.9, 0.6, 2), (0.6, 0.9, 3)):
        labels = walkthrough(4, edges, np.array([0.9, s2, s3]), min_hits=3)
        assert _groups(labels) == {frozenset({0, 1, winner})}


def test_walkthrough_uses_the_walk_cut_only_inside_junction_components() -> None:
    # a clean chain 0-1-2 plus a weak edge 2-3: the chain is accepted at the cc cut
    edges = np.array([[0, 1, 2], [1, 2, 3]])
    labels = walkthrough(4, edges, np.array([0.9, 0.9, 0.4]), cc_cut=0.5, walk_cut=0.3)
    assert _groups(labels) == {frozenset({0, 1, 2})}
    # a junction whose weak continuation is above walk_cut extends the track
    edges = np.array([[0, 1, 1, 2], [1, 2, 4, 3]])
    labels = walkthrough(5, edges, np.array([0.9, 0.9, 0.9, 0.4]), cc_cut=0.5, walk_cut=0.3)
    assert frozenset({0, 1, 2, 3}) in _groups(labels)


def test_many_random_tracks_are_recovered() -> None:
    """Random disjoint chains with noise edges of low score: both builders find them all."""
    rng = np.random.default_rng(3)
    n_tracks, length = 200, 8
    order = rng.permutation(n_tracks * length)
    chains = order.reshape(n_tracks, length)
    true = np.stack([chains[:, :-1].ravel(), chains[:, 1:].ravel()])
    fake = rng.integers(0, n_tracks * length, size=(2, 300))
    fake = fake[:, fake[0] != fake[1]]
    edges = np.concatenate([true, fake], axis=1)
    scores = np.concatenate(
        [rng.uniform(0.6, 1, true.shape[1]), rng.uniform(0, 0.2, fake.shape[1])]
    )
    expected = {frozenset(c.tolist()) for c in chains}
    assert _groups(connected_components(n_tracks * length, edges, scores)) == expected
    assert _groups(walkthrough(n_tracks * length, edges, scores)) == expected


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="edges"):
        connected_components(3, np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="scores"):
        walkthrough(3, np.array([[0], [1]]), np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match=r"node indices must be in \[0, 3\)"):
        walkthrough(3, np.array([[0], [5]]), np.array([0.5]))
    empty = walkthrough(4, np.zeros((2, 0), dtype=np.int64), np.zeros(0))
    assert (empty == -1).all()
