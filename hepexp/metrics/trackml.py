"""TrackML metrics: hit weights, the official event score, and tracking efficiencies.

All functions take pandas DataFrames with the official TrackML columns (see
the TrackML challenge's definitions) and are vectorised with numpy/pandas.

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

The real file pins down the pT ramp, the stretching, the abs(tz - vz) order, the zeroes and the
normalisation, but it holds no tied abs(tz - vz), no particle with more than 17 hits and no
primary below 0.15 GeV with >= 4 hits: the tie rule, the 20-hit cap and the 0.05 GeV cut-off
follow the official trackml-library weight code (phase 2) rather than the file.
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

    Raises:
        ValueError: missing columns, non-integer ids or track ids, duplicated hit ids, or
            submission hit ids that are not in ``truth`` (the official code ignores those;
            here they signal a submission for another event).
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


# ---------------------------------------------------------------- efficiencies
#
# Definitions follow gnn_tracking (``tracking_metrics``); see :func:`efficiencies`.

COUNT_KEYS = (
    "n_particles",
    "n_clusters",
    "n_dm",
    "n_perfect",
    "n_lhc",
    "n_valid_clusters",
    "n_fake",
    "n_matched_clusters",
    "n_matched_particles",
)


def match_clusters(
    truth: pd.DataFrame, submission: pd.DataFrame, min_cluster_size: int = 3
) -> pd.DataFrame:
    """One row per reconstructed cluster (track) with its majority particle.

    The majority particle of a cluster is the particle_id (noise 0 included) holding most of
    its hits; ties go to the smallest particle_id. Columns: track_id, size, valid (track_id >= 0
    and size >= ``min_cluster_size``), maj_particle_id, maj_hits, maj_particle_hits (hits of that
    particle in ``truth``), maj_frac = maj_hits / size, maj_particle_frac = maj_hits /
    maj_particle_hits, dm (both fractions > 0.5), perfect (maj_hits == maj_particle_hits and
    maj_frac > 0.99), lhc (maj_frac > 0.75), matched (maj_frac > 0.5 and majority not noise);
    dm / perfect / lhc / matched are False for invalid clusters. Hits missing from the
    submission or with a NaN track_id belong to no cluster.
    """
    _require_columns(truth, ["hit_id", "particle_id"], "truth")
    labels, free = _track_labels(truth, submission, unassigned=None)
    pid = _int64_column(truth, "particle_id", "truth")
    pcode, p_uniques = pd.factorize(pid)
    p_size = np.bincount(pcode, minlength=len(p_uniques))
    assigned = ~free
    tcode, t_uniques = pd.factorize(labels[assigned])
    n_t = len(t_uniques)
    if n_t == 0:
        return pd.DataFrame(
            {
                "track_id": np.zeros(0, np.int64),
                "size": np.zeros(0, np.int64),
                "valid": np.zeros(0, bool),
                "maj_particle_id": np.zeros(0, np.int64),
                **{k: np.zeros(0, np.int64) for k in ("maj_hits", "maj_particle_hits")},
                **{k: np.zeros(0) for k in ("maj_frac", "maj_particle_frac")},
                **{k: np.zeros(0, bool) for k in ("dm", "perfect", "lhc", "matched")},
            }
        )
    size = np.bincount(tcode, minlength=n_t)
    a_pcode = pcode[assigned]
    n_p = np.int64(len(p_uniques))
    pair_code, pair_keys = pd.factorize(tcode.astype(np.int64) * n_p + a_pcode)
    pair_n = np.bincount(pair_code)
    pair_t = pair_keys // n_p
    pair_p = pair_keys % n_p
    # per track: largest count first, then smallest particle_id
    order = np.lexsort((p_uniques[pair_p], -pair_n, pair_t))
    first = order[np.r_[True, pair_t[order][1:] != pair_t[order][:-1]]]
    t_of_first = pair_t[first]
    maj_p = np.empty(n_t, np.int64)
    maj_n = np.empty(n_t, np.int64)
    maj_p[t_of_first] = pair_p[first]
    maj_n[t_of_first] = pair_n[first]

    track_id = np.asarray(t_uniques, dtype=np.int64)
    maj_particle_hits = p_size[maj_p]
    maj_frac = maj_n / size
    maj_particle_frac = maj_n / maj_particle_hits
    valid = (track_id >= 0) & (size >= min_cluster_size)
    maj_pid = np.asarray(p_uniques, dtype=np.int64)[maj_p]
    return pd.DataFrame(
        {
            "track_id": track_id,
            "size": size,
            "valid": valid,
            "maj_particle_id": maj_pid,
            "maj_hits": maj_n,
            "maj_particle_hits": maj_particle_hits,
            "maj_frac": maj_frac,
            "maj_particle_frac": maj_particle_frac,
            "dm": valid & (maj_frac > 0.5) & (maj_particle_frac > 0.5),
            "perfect": valid & (maj_n == maj_particle_hits) & (maj_frac > 0.99),
            "lhc": valid & (maj_frac > 0.75),
            "matched": valid & (maj_frac > 0.5) & (maj_pid != 0),
        }
    )


def _particle_table(
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    hits: pd.DataFrame | None,
    min_layers: int,
    max_eta: float,
) -> pd.DataFrame:
    """Particles with >= 1 hit in truth: particle_id, pt, eta, nhits, n_layers, reconstructable."""
    _require_columns(particles, ["particle_id", "px", "py", "pz"], "particles")
    pid = _int64_column(truth, "particle_id", "truth")
    real = pid != 0
    code, uniq = pd.factorize(pid[real])
    uniq = np.asarray(uniq, dtype=np.int64)
    nhits = np.bincount(code, minlength=len(uniq))
    if hits is not None:
        _require_columns(hits, ["hit_id", "volume_id", "layer_id"], "hits")
        rows = lookup_rows(_int64_column(hits, "hit_id", "hits"), truth["hit_id"].to_numpy()[real])
        if (rows < 0).any():
            raise ValueError("hits.hit_id: some truth hits are missing from hits")
        vol = hits["volume_id"].to_numpy().astype(np.int64)[rows]
        lay = hits["layer_id"].to_numpy().astype(np.int64)[rows]
        key = pd.unique(code.astype(np.int64) * 1_000_000 + vol * 1000 + lay)
        n_layers = np.bincount(key // 1_000_000, minlength=len(uniq))
    elif min_layers > 0:
        raise ValueError(
            f"hits: needed for the min_layers={min_layers} cut (volume_id, layer_id); "
            "pass hits= or min_layers=0"
        )
    else:
        n_layers = np.full(len(uniq), -1)
    prow = lookup_rows(_int64_column(particles, "particle_id", "particles"), uniq)
    known = prow >= 0
    mom = particles[["px", "py", "pz"]].to_numpy(np.float64)
    px, py, pz = (np.where(known, mom[np.maximum(prow, 0), i], np.nan) for i in range(3))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    reconstructable = (
        known
        & (uniq > 0)
        & (np.abs(eta) < max_eta)
        & ((n_layers >= min_layers) | (min_layers <= 0))
    )
    return pd.DataFrame(
        {
            "particle_id": uniq,
            "pt": pt,
            "eta": eta,
            "nhits": nhits,
            "n_layers": n_layers,
            "reconstructable": reconstructable,
        }
    )


def match_particles(
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    submission: pd.DataFrame,
    hits: pd.DataFrame | None = None,
    min_layers: int = 3,
    max_eta: float = 4.0,
    min_cluster_size: int = 3,
) -> pd.DataFrame:
    """Per-particle matching flags, for efficiency-vs-pT/eta plots.

    One row per particle with at least one hit in ``truth`` (noise excluded), columns:
    particle_id, pt (GeV), eta (from the particle momentum), nhits (in truth), n_layers
    (distinct (volume_id, layer_id) among its hits; -1 without ``hits``), reconstructable
    (particle_id > 0, n_layers >= min_layers, abs(eta) < max_eta; no pT cut), dm_matched,
    perfect_matched, lhc_matched (majority particle of a valid cluster with the respective
    flag of :func:`match_clusters`), n_matched_clusters (valid clusters with > 50% of their hits
    from it).
    """
    table = _particle_table(truth, particles, hits, min_layers, max_eta)
    clusters = match_clusters(truth, submission, min_cluster_size)
    for flag, column in (
        ("dm", "dm_matched"),
        ("perfect", "perfect_matched"),
        ("lhc", "lhc_matched"),
    ):
        table[column] = table["particle_id"].isin(clusters["maj_particle_id"][clusters[flag]])
    matched = clusters["maj_particle_id"][clusters["matched"]]
    counts = matched.value_counts()
    table["n_matched_clusters"] = table["particle_id"].map(counts).fillna(0).astype(np.int64)
    return table


def _ratios(counts: dict) -> dict:
    def div(a: float, b: float) -> float:
        return float(a) / float(b) if b else float("nan")

    c = {k: int(counts[k]) for k in COUNT_KEYS}
    n_dup = c["n_matched_clusters"] - c["n_matched_particles"]
    return {
        "double_majority": div(c["n_dm"], c["n_particles"]),
        "perfect": div(c["n_perfect"], c["n_particles"]),
        "lhc": div(c["n_lhc"], c["n_clusters"]),
        "fake_dm": div(c["n_clusters"] - c["n_dm"], c["n_clusters"]),
        "fake_lhc": div(c["n_clusters"] - c["n_lhc"], c["n_clusters"]),
        "fake_rate": div(c["n_fake"], c["n_valid_clusters"]),
        "duplicate_rate": div(n_dup, c["n_matched_particles"]),
        **c,
    }


def efficiencies(
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    submission: pd.DataFrame,
    pt_min: float = 0.9,
    min_layers: int = 3,
    max_eta: float = 4.0,
    hits: pd.DataFrame | None = None,
    min_cluster_size: int = 3,
) -> dict:
    """Tracking efficiencies of one event (gnn_tracking definitions), with their counts.

    Clusters are the submission's tracks; a cluster is *valid* if its track_id >= 0 and it
    has >= ``min_cluster_size`` hits (hits missing from the submission or with negative/NaN
    track_id are in no valid cluster). Its majority particle is defined in
    :func:`match_clusters`. A particle is *selected* if it has hits in ``truth``, particle_id
    > 0, pT >= ``pt_min``, abs(eta) < ``max_eta`` and hits on >= ``min_layers`` distinct
    (volume_id, layer_id) (``hits`` needed unless ``min_layers`` is 0).

    Counts (summable over events, see :func:`aggregate_efficiencies`):
        n_particles: selected particles.
        n_clusters: valid clusters whose majority particle is selected.
        n_dm / n_perfect: selected particles with a double-majority (> 50% of the cluster and
            > 50% of the particle's hits) / perfect (the cluster holds exactly the particle's
            hits, majority fraction > 0.99) cluster; at most one each per particle.
        n_lhc: clusters among n_clusters with majority fraction > 75%.
        n_valid_clusters: all valid clusters.
        n_fake: valid clusters with majority fraction <= 50% or a noise majority.
        n_matched_clusters / n_matched_particles: clusters among n_clusters with majority
            fraction > 50%, and the distinct particles they match.

    Ratios: double_majority = n_dm / n_particles; perfect = n_perfect / n_particles;
    lhc = n_lhc / n_clusters; fake_dm = (n_clusters - n_dm) / n_clusters and fake_lhc =
    (n_clusters - n_lhc) / n_clusters (gnn_tracking's fake_double_majority / fake_lhc);
    fake_rate = n_fake / n_valid_clusters; duplicate_rate = (n_matched_clusters -
    n_matched_particles) / n_matched_particles. A ratio with a zero denominator is NaN.
    """
    table = _particle_table(truth, particles, hits, min_layers, max_eta)
    selected = table["reconstructable"].to_numpy() & (table["pt"].to_numpy() >= pt_min)
    sel_ids = table["particle_id"].to_numpy()[selected]
    clusters = match_clusters(truth, submission, min_cluster_size)
    valid = clusters["valid"].to_numpy()
    maj_sel = clusters["maj_particle_id"].isin(sel_ids).to_numpy() & valid
    matched = maj_sel & (clusters["maj_frac"].to_numpy() > 0.5)
    counts = {
        "n_particles": int(selected.sum()),
        "n_clusters": int(maj_sel.sum()),
        "n_dm": int((clusters["dm"].to_numpy() & maj_sel).sum()),
        "n_perfect": int((clusters["perfect"].to_numpy() & maj_sel).sum()),
        "n_lhc": int((clusters["lhc"].to_numpy() & maj_sel).sum()),
        "n_valid_clusters": int(valid.sum()),
        "n_fake": int((valid & ~clusters["matched"].to_numpy()).sum()),
        "n_matched_clusters": int(matched.sum()),
        "n_matched_particles": int(clusters["maj_particle_id"][matched].nunique()),
    }
    return _ratios(counts)


def aggregate_efficiencies(results: list[dict]) -> dict:
    """Combine per-event :func:`efficiencies` results by summing their counts (so every event
    weighs by its number of particles / clusters, not equally) and recomputing the ratios."""
    if not results:
        raise ValueError("aggregate_efficiencies: empty list of results")
    totals = {k: 0 for k in COUNT_KEYS}
    for i, r in enumerate(results):
        missing = [k for k in COUNT_KEYS if k not in r]
        if missing:
            raise ValueError(f"aggregate_efficiencies: result {i} lacks counts {missing}")
        for k in COUNT_KEYS:
            totals[k] += int(r[k])
    return _ratios(totals)
