"""End-to-end ``convert.py`` throughput of a regressor_flash checkpoint, stage by stage.

Simulates ``--events`` TrackML events of 10-50 particles (TML:10-50-like, no noise) into a
directory, runs ``python convert.py`` on it as a user would (model on ``--device``, HDBSCAN in
worker processes on every CPU core) and prints events/s with the seconds of each stage (read,
model, clustering, write) and the stage that limits the throughput.

    python benchmarks/regressor_convert_speed.py --ckpt <run>/checkpoints/best.ckpt \
        [--events 2000] [--device cuda] [--json convert_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hepexp.data.trackml.io import event_prefix, write_event
from hepexp.data.trackml.simulate import simulate_event
from hepexp.utils.io import write_json

ROOT = Path(__file__).resolve().parents[1]


def simulate_events(directory: Path, n_events: int, particles: tuple[int, int]) -> int:
    """Write ``n_events`` small events (hits, particles, truth); return the number of hits."""
    rng = np.random.default_rng(0)
    n_hits = 0
    for event_id in range(1, n_events + 1):
        n = int(rng.integers(particles[0], particles[1] + 1))
        hits, _, particles_frame, truth = simulate_event(n, seed=event_id, noise_fraction=0.0)
        write_event(
            event_prefix(directory, event_id), hits=hits, particles=particles_frame, truth=truth
        )
        n_hits += len(hits)
    return n_hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="a regressor_flash checkpoint")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--particles", type=int, nargs=2, default=(10, 50))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--work", default=None, help="folder for events and output (default: tmp)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        events = work / "events"
        start = time.perf_counter()
        n_hits = simulate_events(events, args.events, tuple(args.particles))
        print(
            f"simulated {args.events} events ({n_hits:,} hits) in {time.perf_counter() - start:.1f} s"
        )
        overrides = [
            f"ckpt_path={Path(args.ckpt).resolve()}",
            f"input={events}",
            f"output={work / 'tracks'}",
            f"hydra.run.dir={work / 'convert_run'}",
            "+model.clustering.n_jobs=-1",
        ]
        if args.device:
            overrides.append(f"device={args.device}")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "convert.py"), *overrides],
            check=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wall = time.perf_counter() - start
        result = json.loads((work / "convert_run" / "convert.json").read_text())

    seconds = result["seconds"]
    total = sum(seconds.values())
    print(
        f"convert.py on {result['device']}: {result['n_events']} events in {total:.1f} s of stages "
        f"({wall:.1f} s with start-up): {result['events_per_s']:.1f} events/s"
    )
    for stage, s in seconds.items():
        print(f"  {stage:<11} {s:8.2f} s  {s / total:6.1%}")
    print(f"limited by: {result['slowest_stage']}; TrackML score {result.get('trackml_score')}")
    if args.json:
        write_json(
            args.json,
            {
                "device": result["device"],
                "events": result["n_events"],
                "hits": result["n_hits"],
                "events_per_s": result["events_per_s"],
                "wall_s_with_startup": wall,
                "seconds": seconds,
                "slowest_stage": result["slowest_stage"],
                "trackml_score": result.get("trackml_score"),
                "cpu_cores": os.cpu_count(),
            },
        )


if __name__ == "__main__":
    main()
