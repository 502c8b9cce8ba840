"""Shared helpers for the TrackML metric/view tests: the real event and random events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .conftest import SHARED, require

EVENT = SHARED / "data" / "trackml" / "event000000001"
IDS = {"hit_id": "int64", "particle_id": "int64"}


def real_event(with_cells: bool = False) -> dict[str, pd.DataFrame]:
    """The real 5% TrackML event from ../shared (absent: see :func:`require`)."""
    names = ["hits", "particles", "truth"] + (["cells"] if with_cells else [])
    paths = {n: EVENT.parent / f"{EVENT.name}-{n}.csv.gz" for n in names}
    absent = [str(p) for p in paths.values() if not p.exists()]
    require(not absent, f"real TrackML event not available: {', '.join(absent)}")
    return {n: pd.read_csv(p, dtype={k: v for k, v in IDS.items()}) for n, p in paths.items()}


def random_event(
    rng: np.random.Generator, n_particles: int = 40, noise: int = 20, max_hits: int = 25
) -> dict[str, pd.DataFrame]:
    """A small random event in TrackML format (ids consistent, physics not)."""
    gen = rng.choice([0, 0, 0, 1], size=n_particles)
    pids = (np.arange(1, n_particles + 1, dtype=np.int64) << 36) | (gen.astype(np.int64) << 24)
    nhits = rng.integers(0, max_hits + 1, size=n_particles)
    particles = pd.DataFrame(
        {
            "particle_id": pids,
            "particle_type": rng.choice([-211, 211, 11, 13], size=n_particles),
            "vx": rng.normal(0, 0.01, n_particles),
            "vy": rng.normal(0, 0.01, n_particles),
            "vz": rng.normal(0, 50, n_particles),
            "px": rng.normal(0, 1.2, n_particles),
            "py": rng.normal(0, 1.2, n_particles),
            "pz": rng.normal(0, 3, n_particles),
            "q": rng.choice([-1, 1], size=n_particles),
            "nhits": nhits,
        }
    )
    hit_pid = np.concatenate([np.repeat(pids, nhits), np.zeros(noise, dtype=np.int64)])
    n = len(hit_pid)
    # integer-valued tz so that ties in abs(tz - vz) occur
    tz = np.round(rng.normal(0, 300, n))
    perm = rng.permutation(n)
    hit_pid, tz = hit_pid[perm], tz[perm]
    hit_id = rng.permutation(n).astype(np.int64) + 1
    xyz = rng.normal(0, 300, (n, 3))
    truth = pd.DataFrame(
        {
            "hit_id": hit_id,
            "particle_id": hit_pid,
            "tx": xyz[:, 0],
            "ty": xyz[:, 1],
            "tz": tz,
            "tpx": rng.normal(size=n),
            "tpy": rng.normal(size=n),
            "tpz": rng.normal(size=n),
            "weight": rng.random(n) * (hit_pid != 0),
        }
    )
    hits = pd.DataFrame(
        {
            "hit_id": hit_id,
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": tz,
            "volume_id": rng.choice([7, 8, 9, 13, 17], size=n),
            "layer_id": rng.choice([2, 4, 6, 8], size=n),
            "module_id": rng.integers(1, 100, size=n),
        }
    )
    return {"hits": hits, "particles": particles, "truth": truth}
