"""TrackML metrics: hit weights, the official event score, and tracking efficiencies.

All functions take pandas DataFrames with the official TrackML columns (see
``docs`` / REFERENCE "TrackML data") and are vectorised with numpy/pandas.

Hit weights (:func:`hit_weights`) follow the challenge's "phase 2" scheme. Checked against the
real ``event000000001-truth.csv`` (a 5% subsample of a real event): the weights agree with the
file's ``weight`` column up to one global factor to within the file's 6 printed digits, with an
identical zero pattern (see ``tests/test_trackml_metrics.py``). The details that matter:

- pT factor: ``interp(pT, [0.05, 0.5, 3], [0.2, 0.2, 1.0])``, 0 below 0.05 GeV, 1 above 3 GeV.
- order factor: the particle's hits are ranked by ``abs(tz - vz)`` (average rank on ties,
  index = floor(rank - 1)); the proposal ``[10, 8, 6, 5, 3, 3, 3, 5, 6]`` is placed at the
  supports ``i * (n - 1) / 8`` and linearly interpolated at hit indices ``0 .. n - 1``, then
  normalised to sum 1, where ``n = min(nhits, 20)``; hit indices >= 20 get 0; nhits < 4 gets 0.
  ``nhits`` is the particle's ``particles.nhits`` (the official choice; on the real file it
  equals the number of hits present, because the subsample keeps whole particles).
- weight = pT factor x order factor, 0 for noise, for hits of particles missing from
  ``particles`` and for non-primaries (generation bits 24-35 of particle_id != 0); normalised
  to sum 1 over the truth rows given.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

ORDER_PROPOSAL = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0])
ORDER_MIN_HITS = 4
ORDER_MAX_HITS = 20


def _require_columns(df: pd.DataFrame, columns: list[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; expected at least {columns}")


def _int64_column(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    values = df[column].to_numpy()
    if values.dtype.kind not in "iu":
        raise ValueError(
            f"{name}.{column}: expected an integer dtype (int64), got {values.dtype}; "
            "read TrackML ids with dtype int64 (float loses 64-bit particle ids)"
        )
    return values.astype(np.int64, copy=False)


def lookup_rows(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row index of each ``query`` value in the unique array ``keys``; -1 where absent."""
    return pd.Index(np.asarray(keys)).get_indexer(np.asarray(query)).astype(np.int64)


def _is_unique(values: np.ndarray) -> bool:
    return bool(pd.Index(values).is_unique)


def particle_generation(particle_id: np.ndarray) -> np.ndarray:
    """Generation field of TrackML particle ids (bits 24-35; 0 = primary)."""
    return (np.asarray(particle_id, dtype=np.int64) >> 24) & 0xFFF


def order_weight_matrix(
    proposal: np.ndarray = ORDER_PROPOSAL,
    min_hits: int = ORDER_MIN_HITS,
    max_hits: int = ORDER_MAX_HITS,
) -> np.ndarray:
    """Order-factor table ``w[nhits, ihit]`` of shape ``(max_hits + 1, max_hits)``.

    Row ``n`` (``min_hits <= n <= max_hits``) holds the proposal stretched over ``n`` hits by
    linear interpolation and normalised to sum 1; rows below ``min_hits`` are zero.
    """
    proposal = np.asarray(proposal, dtype=np.float64)
    table = np.zeros((max_hits + 1, max_hits))
    supports_unit = np.arange(len(proposal)) / (len(proposal) - 1)
    for n in range(min_hits, max_hits + 1):
        row = np.interp(np.arange(n), supports_unit * (n - 1), proposal)
        table[n, :n] = row / row.sum()
    return table


_ORDER_TABLE = order_weight_matrix()


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """pT factor of the hit weights: 0.2 from 0.05 to 0.5 GeV, linear to 1 at 3 GeV, 0 below
    0.05 GeV, 1 above 3 GeV."""
    return np.interp(np.asarray(pt, dtype=np.float64), [0.05, 0.5, 3.0], [0.2, 0.2, 1.0], 0.0, 1.0)


def hit_weights(
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    nhits_from: Literal["particles", "truth"] = "particles",
    normalise: bool = True,
) -> np.ndarray:
    """Phase-2 TrackML hit weights, aligned with the rows of ``truth``.

    Args:
        truth: hit_id, particle_id (int64, 0 = noise), tz.
        particles: particle_id, vz, px, py, nhits.
        nhits_from: ``"particles"`` (official: ``particles.nhits``) or ``"truth"`` (the number
            of the particle's hits present in ``truth``, e.g. after a volume cut).
        normalise: divide by the sum so the weights sum to 1 (left as-is when all are 0).

    Returns:
        float64 array of shape ``(len(truth),)``.

    Raises:
        ValueError: missing columns, non-integer ids, duplicated particle ids, or a particle
            with more hits in ``truth`` than its ``nhits`` (inconsistent event).
    """
    _require_columns(truth, ["hit_id", "particle_id", "tz"], "truth")
    _require_columns(particles, ["particle_id", "vz", "px", "py", "nhits"], "particles")
    if nhits_from not in ("particles", "truth"):
        raise ValueError(f"nhits_from: expected 'particles' or 'truth', got {nhits_from!r}")
    pid = _int64_column(truth, "particle_id", "truth")
    ppid = _int64_column(particles, "particle_id", "particles")
    if not _is_unique(ppid):
        raise ValueError("particles.particle_id: duplicated particle ids")
    n = len(pid)
    if n == 0:
        return np.zeros(0)

    prow = lookup_rows(ppid, pid)  # row in `particles`, -1 for noise / unknown particles
    known = (prow >= 0) & (pid != 0)
    if not known.any():
        return np.zeros(n)
    prow = np.where(known, prow, 0)

    pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))
    w_pt = np.where(known, pt_weight(pt)[prow], 0.0)
    vz = np.where(known, particles["vz"].to_numpy(np.float64)[prow], 0.0)

    # hit index along the track: average rank of abs(tz - vz) within the particle, minus 1,
    # truncated to an integer (ties share the truncated average rank)
    dz = np.abs(truth["tz"].to_numpy(np.float64) - vz)
    if not np.isfinite(dz[known]).all():
        raise ValueError("truth.tz / particles.vz: non-finite values for non-noise hits")
    rank = pd.Series(dz).groupby(pid).rank(method="average").to_numpy()
    ihit = np.floor(rank - 1.0).astype(np.int64)

    if nhits_from == "particles":
        nhits = np.where(known, particles["nhits"].to_numpy()[prow], 0).astype(np.int64)
    else:
        code, _ = pd.factorize(pid)
        nhits = np.where(known, np.bincount(code)[code], 0).astype(np.int64)
    bad = known & (ihit >= nhits) & (nhits >= ORDER_MIN_HITS)
    if bad.any():
        raise ValueError(
            f"truth/particles: particle {int(pid[bad][0])} has more hits in truth than "
            f"particles.nhits={int(nhits[bad][0])}; use nhits_from='truth' or fix the event"
        )
    n_eff = np.minimum(nhits, ORDER_MAX_HITS)
    in_table = known & (n_eff >= ORDER_MIN_HITS) & (ihit < ORDER_MAX_HITS)
    w_order = np.zeros(n)
    w_order[in_table] = _ORDER_TABLE[n_eff[in_table], ihit[in_table]]

    weight = w_pt * w_order
    weight[particle_generation(pid) != 0] = 0.0
    total = weight.sum()
    if normalise and total > 0:
        weight /= total
    return weight


def _track_labels(
    truth: pd.DataFrame, submission: pd.DataFrame, unassigned: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Track label per truth row and a mask of hits that form no track (each its own track).

    Hits missing from the submission, with a NaN track_id, or with ``track_id == unassigned``
    are unassigned. Raises on duplicated hit ids or submission hits unknown to ``truth``.
    """
    _require_columns(submission, ["hit_id", "track_id"], "submission")
    hit_id = _int64_column(truth, "hit_id", "truth")
    sub_hit = _int64_column(submission, "hit_id", "submission")
    if not _is_unique(hit_id):
        raise ValueError("truth.hit_id: duplicated hit ids")
    if not _is_unique(sub_hit):
        raise ValueError("submission.hit_id: duplicated hit ids (each hit belongs to one track)")
    track = submission["track_id"].to_numpy()
    if track.dtype.kind == "f":
        nan = np.isnan(track)
        if not np.all(track[~nan] == np.round(track[~nan])):
            raise ValueError("submission.track_id: expected integer track ids")
    elif track.dtype.kind in "iu":
        nan = np.zeros(len(track), dtype=bool)
    else:
        raise ValueError(f"submission.track_id: expected integers, got dtype {track.dtype}")
    rows = lookup_rows(hit_id, sub_hit)
    if (rows < 0).any():
        missing = sub_hit[rows < 0][:5].tolist()
        raise ValueError(
            f"submission.hit_id: {int((rows < 0).sum())} hit ids not in truth, e.g. {missing}"
        )
    labels = np.zeros(len(hit_id), dtype=np.int64)
    free = np.ones(len(hit_id), dtype=bool)
    labels[rows[~nan]] = track[~nan].astype(np.int64)
    free[rows[~nan]] = False
    if unassigned is not None:
        free |= labels == unassigned
    return labels, free


def score_event(
    truth: pd.DataFrame, submission: pd.DataFrame, unassigned: int | None = -1
) -> float:
    """Official TrackML score of one event.

    For every reconstructed track, the majority particle is the one holding most of its hits.
    The track is good if that particle holds > 50% of the track's hits and the track holds > 50%
    of the particle's hits in ``truth``; the score is the summed ``truth.weight`` of the good
    tracks' majority-particle hits divided by the total ``truth.weight`` (so a perfect
    submission scores 1 whatever the normalisation of ``truth``). Noise (particle_id 0) is
    scored like a particle but has weight 0 in real truth files. A good pair (track, particle)
    is necessarily the majority pair, so ties never matter.

    Args:
        truth: hit_id, particle_id, weight (one row per hit of the event).
        submission: hit_id, track_id (any integers, any order, subset of the truth hits).
        unassigned: track_id that marks unassigned hits (HDBSCAN's -1); ``None`` treats every
            id as a track. Unassigned hits and hits missing from the submission each form their
            own one-hit track, as in the official code for missing hits.

    Returns:
        The score; NaN when the truth weights sum to 0 (score undefined).
    """
    _require_columns(truth, ["hit_id", "particle_id", "weight"], "truth")
    labels, free = _track_labels(truth, submission, unassigned)
    pid = _int64_column(truth, "particle_id", "truth")
    weight = truth["weight"].to_numpy(np.float64)
    total = weight.sum()
    if len(pid) == 0 or total == 0:
        return float("nan")

    pcode, p_uniques = pd.factorize(pid)
    p_size = np.bincount(pcode)
    track = np.empty(len(pid), dtype=np.int64)
    tcode, t_uniques = pd.factorize(labels[~free])
    track[~free] = tcode
    track[free] = len(t_uniques) + np.arange(int(free.sum()))  # unassigned: one-hit tracks
    t_size = np.bincount(track)

    n_p = np.int64(len(p_uniques))
    pair_code, pair_keys = pd.factorize(track * n_p + pcode)
    n_pair = np.bincount(pair_code)
    w_pair = np.bincount(pair_code, weights=weight)
    good = (2 * n_pair > t_size[pair_keys // n_p]) & (2 * n_pair > p_size[pair_keys % n_p])
    return float(w_pair[good].sum() / total)
