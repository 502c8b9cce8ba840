"""Prometheus pre-processing throughput: events -> per-OM timing histograms, and loading them.

Simulates ``--n-events`` default events (nu_e CC, E^-1 1 TeV-1 PeV; or use ``--input`` files),
then measures in the same run:

* pre-processing throughput (photons/s and OMs/s) of :func:`preprocess_events` writing the
  sparse and the dense format, and of a per-OM Python loop (``np.histogram`` per OM, the
  original om2vec's approach) on a subset, as a ratio;
* file size per OM of both formats;
* loading throughput (OMs/s) of read + :func:`om_batch` (dense float32 (n, 6400) output) for
  both formats, reading one row group at a time as the streaming loader does.

    python benchmarks/prometheus_preprocess.py [--n-events 400] [--input f.parquet ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq

from hepexp.data.prometheus.io import read_events
from hepexp.data.prometheus.preprocess import om_batch, om_histograms, preprocess_events
from hepexp.data.prometheus.simulate import simulate_events


def loop_reference(photons: ak.Array, num_bins: int, max_time: float) -> int:
    """Per-event, per-OM loop with np.histogram (the original's structure, correct binning)."""
    edges = np.linspace(0.0, max_time, num_bins + 1)
    n_om = 0
    for ev in photons:
        t = ak.to_numpy(ev.t)
        if len(t) == 0:
            continue
        rel = np.minimum(t - t.min(), np.nextafter(max_time, 0))
        key = ak.to_numpy(ev.string_id) * 1000 + ak.to_numpy(ev.sensor_id)
        for k in np.unique(key):
            np.histogram(rel[key == k], bins=edges)
            n_om += 1
    return n_om


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-events", type=int, default=400)
    parser.add_argument("--input", type=Path, nargs="*")
    parser.add_argument("--num-bins", type=int, default=6400)
    parser.add_argument("--max-time", type=float, default=6400.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    nb, mt = args.num_bins, args.max_time
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = args.input or [
            simulate_events(tmp / "events.parquet", args.n_events, seed=args.seed, progress=False)
        ]
        photons = ak.concatenate([read_events(p, columns=["photons"]).photons for p in inputs])
        n_photons = int(ak.sum(ak.num(photons.t)))
        h = om_histograms(photons, nb, mt)
        n_om = len(h["n_photons"])
        nnz = np.diff(h["offsets"])
        print(f"input: {len(photons)} events, {n_photons:,} photons, {n_om:,} hit OMs")
        print(
            f"photons per hit OM: median {np.median(h['n_photons']):.0f}, non-empty bins per OM: median {np.median(nnz):.0f}, mean {nnz.mean():.1f} of {nb}"
        )

        t_hist = best_of(lambda: om_histograms(photons, nb, mt))
        print(
            f"\nom_histograms (in memory): {n_photons / t_hist:,.0f} photons/s, {n_om / t_hist:,.0f} OMs/s"
        )
        sub = photons[: max(1, len(photons) // 10)]
        n_sub = int(ak.sum(ak.num(sub.t)))
        t_loop = best_of(lambda: loop_reference(sub, nb, mt), repeat=1)
        t_vec = best_of(lambda: om_histograms(sub, nb, mt))
        print(
            f"per-OM Python loop on {len(sub)} events: {n_sub / t_loop:,.0f} photons/s -> vectorised is {t_loop / t_vec:.0f}x faster"
        )

        print(
            f"\n{'format':8s} {'preprocess photons/s':>21s} {'OMs/s':>10s} {'bytes/OM':>9s} {'load OMs/s':>11s} {'load MB/s (dense f32)':>22s}"
        )
        results = {}
        for fmt in ("sparse", "dense"):
            out = tmp / fmt
            t_pre = best_of(
                lambda fmt=fmt, out=out: preprocess_events(
                    inputs, out, nb, mt, fmt=fmt, progress=False
                ),
                repeat=2,
            )
            files = sorted(out.glob("part-*.parquet"))
            size = sum(f.stat().st_size for f in files)

            def load(files=files):
                n = 0
                for f in files:
                    pf = pq.ParquetFile(f)
                    for rg in range(pf.num_row_groups):
                        n += len(om_batch(pf.read_row_group(rg), nb)["counts"])
                return n

            assert load() == n_om
            t_load = best_of(load)
            results[fmt] = t_load
            print(
                f"{fmt:8s} {n_photons / t_pre:21,.0f} {n_om / t_pre:10,.0f} {size / n_om:9.1f} {n_om / t_load:11,.0f} "
                f"{n_om * nb * 4 / t_load / 1e6:22,.0f}"
            )
        print(f"\nloading sparse is {results['dense'] / results['sparse']:.1f}x faster than dense")


if __name__ == "__main__":
    main()
