"""Speed of the vectorised TrackML score (and hit weights) against straightforward loops.

Builds a full-size event (~110k hits) by replicating the real 5% event from ../shared 20
times with fresh hit and particle ids (or, with --random or without ../shared, a random
event of the same size), makes a realistic imperfect submission, and times both versions of
the same definition in one run. Asserts that they agree.

    PYTHONPATH=$PWD python benchmarks/trackml_score_speed.py [--copies 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.metrics.trackml import hit_weights, score_event
from hepexp.metrics.trackml_reference import reference_hit_weights, reference_score_event

SHARED = Path(
    os.environ.get("HEPEXP_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)
EVENT = SHARED / "data" / "trackml" / "event000000001"


def replicated_event(copies: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real truth/particles repeated ``copies`` times with unique hit and particle ids."""
    ids = {"hit_id": "int64", "particle_id": "int64"}
    truth = pd.read_csv(f"{EVENT}-truth.csv.gz", dtype=ids)
    particles = pd.read_csv(f"{EVENT}-particles.csv.gz", dtype=ids)
    uniq = np.unique(particles["particle_id"].to_numpy())
    truths, parts = [], []
    for k in range(copies):
        # new id keeps the generation bits (24-35) and puts a fresh index in bits 36-51
        def renumber(pid: np.ndarray, k: int = k) -> np.ndarray:
            idx = np.searchsorted(uniq, pid) + 1 + k * len(uniq)
            return np.where(pid == 0, 0, (idx << 36) | (pid & ((1 << 36) - 1)))

        truths.append(
            truth.assign(
                hit_id=truth["hit_id"] + k * (truth["hit_id"].max() + 1),
                particle_id=renumber(truth["particle_id"].to_numpy()),
            )
        )
        parts.append(particles.assign(particle_id=renumber(particles["particle_id"].to_numpy())))
    truth = pd.concat(truths, ignore_index=True)
    particles = pd.concat(parts, ignore_index=True)
    truth["weight"] = hit_weights(truth, particles)
    return truth, particles


def random_event(n_hits: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random event: ~11 hits per particle, 15% noise, TrackML columns."""
    n_particles = int(n_hits * 0.85 / 11)
    pid = (np.arange(1, n_particles + 1, dtype=np.int64) << 36) | (
        (rng.random(n_particles) < 0.2).astype(np.int64) << 24
    )
    nhits = rng.poisson(11, n_particles)
    hit_pid = np.concatenate([np.repeat(pid, nhits), np.zeros(n_hits - nhits.sum(), np.int64)])
    truth = pd.DataFrame(
        {
            "hit_id": np.arange(1, len(hit_pid) + 1),
            "particle_id": rng.permutation(hit_pid),
            "tz": rng.normal(0, 1000, len(hit_pid)),
        }
    )
    particles = pd.DataFrame(
        {
            "particle_id": pid,
            "vz": rng.normal(0, 50, n_particles),
            "px": rng.exponential(0.5, n_particles),
            "py": rng.exponential(0.5, n_particles),
            "nhits": nhits,
        }
    )
    truth["weight"] = hit_weights(truth, particles)
    return truth, particles


def imperfect_submission(truth: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Perfect labels with 10% of hits relabelled, 5% unassigned (-1), 5% missing, shuffled."""
    _, labels = np.unique(truth["particle_id"].to_numpy(), return_inverse=True)
    u = rng.random(len(labels))
    labels[u < 0.10] = rng.integers(0, labels.max() + 1, int((u < 0.10).sum()))
    labels[(u >= 0.10) & (u < 0.15)] = -1
    sub = pd.DataFrame({"hit_id": truth["hit_id"].to_numpy(), "track_id": labels})
    return sub[u < 0.95].sample(frac=1.0, random_state=0).reset_index(drop=True)


def best_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of the real event")
    parser.add_argument("--repeat", type=int, default=5, help="timing repeats (best of)")
    parser.add_argument("--random", action="store_true", help="random event instead")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.random or not Path(f"{EVENT}-truth.csv.gz").exists():
        source = "random"
        truth, particles = random_event(5527 * args.copies, rng)
    else:
        source = f"real event x{args.copies}"
        truth, particles = replicated_event(args.copies)
    sub = imperfect_submission(truth, rng)
    n_tracks = sub["track_id"].nunique()
    print(f"event: {source}, {len(truth)} hits, {truth['particle_id'].nunique() - 1} particles")
    print(f"submission: {len(sub)} hits in {n_tracks} track ids")

    t_fast, s_fast = best_time(lambda: score_event(truth, sub), args.repeat)
    t_ref, s_ref = best_time(lambda: reference_score_event(truth, sub), max(1, args.repeat // 2))
    assert abs(s_fast - s_ref) < 1e-12, (s_fast, s_ref)
    print(
        f"score_event   vectorised {t_fast * 1e3:8.1f} ms | loop {t_ref * 1e3:8.1f} ms | "
        f"ratio {t_ref / t_fast:6.1f}x | score {s_fast:.6f}"
    )
    t_wf, w_fast = best_time(lambda: hit_weights(truth, particles), args.repeat)
    t_wr, w_ref = best_time(lambda: reference_hit_weights(truth, particles), 1)
    assert np.allclose(w_fast, w_ref, rtol=1e-10, atol=1e-16)
    print(
        f"hit_weights   vectorised {t_wf * 1e3:8.1f} ms | loop {t_wr * 1e3:8.1f} ms | "
        f"ratio {t_wr / t_wf:6.1f}x"
    )


if __name__ == "__main__":
    main()
