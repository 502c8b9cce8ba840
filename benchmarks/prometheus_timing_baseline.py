"""Per-OM asymmetric-Gaussian-mixture baseline: fit time per OM and reconstruction quality.

Bins the OMs of the real Prometheus example (or ``--simulate N`` default events) into 6,400 x 1 ns
histograms, fits mixtures of K = 4, 8, 16 asymmetric Gaussians per OM (batched EM), and reports
the fit time per OM and the Jensen-Shannon distance (base 2) between each OM's histogram and the
binned mixture, overall and by photon count. Also times the same fit one OM at a time (the
unbatched loop) on a subset, as a ratio.

    python benchmarks/prometheus_timing_baseline.py [--simulate 0] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hepexp.data.prometheus.io import read_events
from hepexp.data.prometheus.preprocess import densify, om_histograms
from hepexp.data.prometheus.simulate import simulate_events
from hepexp.metrics.timing import fit_asymmetric_gmm, js_distance


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--simulate", type=int, default=0, help="use N simulated events instead of the real file"
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HEPEXP_SHARED", here.parent / "shared"))
    )
    parser.add_argument("--components", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--loop-oms", type=int, default=200)
    args = parser.parse_args()
    num_bins, max_time = 6400, 6400.0
    if args.simulate:
        with tempfile.TemporaryDirectory() as tmp:
            path = simulate_events(Path(tmp) / "ev.parquet", args.simulate, seed=4, progress=False)
            photons = read_events(path, columns=["photons"]).photons
        source = f"{args.simulate} simulated events"
    else:
        photons = read_events(
            args.shared / "data" / "prometheus" / "example_photons.parquet", columns=["photons"]
        ).photons
        source = "the 10 real events"
    h = om_histograms(photons, num_bins, max_time)
    dense = densify(h["offsets"], h["bin_index"], h["bin_count"], num_bins)
    times = (h["bin_index"] + 0.5) * (max_time / num_bins)
    n_om = len(dense)
    print(
        f"{n_om} OMs from {source}; photons per OM median {np.median(h['n_photons']):.0f}, mean {h['n_photons'].mean():.0f}"
    )
    classes = [(1, 1), (2, 10), (11, 100), (101, 10**9)]
    header = " ".join(
        f"{f'n={lo}-{hi}' if hi < 10**9 else f'n>{lo - 1}':>10s}" for lo, hi in classes
    )
    print(
        f"\n{'K':>3s} {'params':>6s} {'fit ms/OM':>10s} {'JS mean':>8s} {'JS median':>10s} {'KS median':>10s}"
        f" | JS mean by photons per OM: {header}"
    )
    for k in args.components:
        t0 = time.perf_counter()
        gmm = fit_asymmetric_gmm(h["offsets"], times, h["bin_count"], n_components=k)
        t_fit = time.perf_counter() - t0
        model = gmm.binned(num_bins, max_time)
        js = js_distance(dense, model)
        ks = np.abs(np.cumsum(dense, 1) / dense.sum(1, keepdims=True) - np.cumsum(model, 1)).max(1)
        by = [js[(h["n_photons"] >= lo) & (h["n_photons"] <= hi)].mean() for lo, hi in classes]
        print(
            f"{k:3d} {gmm.n_parameters:6d} {1e3 * t_fit / n_om:10.3f} {js.mean():8.3f} {np.median(js):10.3f}"
            f" {np.median(ks):10.3f} | " + " ".join(f"{v:10.3f}" for v in by)
        )
    # Poisson floor: n photons drawn from the fitted distribution itself are as far (in JS) from it
    # as the real histogram is, so JS on sparse OMs mostly measures the sparsity of the input
    rng = np.random.default_rng(0)
    resampled = np.stack(
        [rng.multinomial(int(n), p / p.sum()) for n, p in zip(h["n_photons"], model, strict=True)]
    )
    floor = js_distance(resampled, model)
    by = [floor[(h["n_photons"] >= lo) & (h["n_photons"] <= hi)].mean() for lo, hi in classes]
    print(
        f"{'floor':>21s} {floor.mean():8.3f} {np.median(floor):10.3f} {'':>10s} | "
        + " ".join(f"{v:10.3f}" for v in by)
        + f"   <- JS(multinomial resample of the K={args.components[-1]} fit, the fit)"
    )
    k = max(args.components)
    sub = np.random.default_rng(0).choice(n_om, size=min(args.loop_oms, n_om), replace=False)
    t0 = time.perf_counter()
    for i in sub:
        lo, hi = h["offsets"][i], h["offsets"][i + 1]
        fit_asymmetric_gmm(
            np.array([0, hi - lo]), times[lo:hi], h["bin_count"][lo:hi], n_components=k
        )
    t_loop = (time.perf_counter() - t0) / len(sub)
    offsets_sub = np.concatenate([[0], np.cumsum(np.diff(h["offsets"])[sub])])
    idx = np.concatenate([np.arange(h["offsets"][i], h["offsets"][i + 1]) for i in sub])
    t0 = time.perf_counter()
    fit_asymmetric_gmm(offsets_sub, times[idx], h["bin_count"][idx], n_components=k)
    t_batch = (time.perf_counter() - t0) / len(sub)
    print(
        f"\nK={k}, {len(sub)} random OMs: one at a time {1e3 * t_loop:.2f} ms/OM, batched {1e3 * t_batch:.2f} ms/OM ({t_loop / t_batch:.1f}x)"
    )


if __name__ == "__main__":
    main()
