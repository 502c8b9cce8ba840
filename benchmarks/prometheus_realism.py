"""Prometheus simulator realism: the built-in generator side by side with the 10 real events.

Two comparisons:

* population: ``simulate_events`` with default settings (nu_e CC, E^-1 1 TeV-1 PeV, as the
  real file's run config) vs the real file: photons per event, hit OMs per event, photons per
  hit OM, per-OM time spread (std and first-to-last span, OMs with >= 2 photons); quantiles and
  a two-sample KS p-value;
* matched: the real events' own mc_truth re-simulated ``--replicas`` times with
  ``simulate_photons`` (same energies, vertices, directions), event by event, and with the
  classic AMANDA Pandel parameters for the time spreads.

Also refits the light model to the real events (``fit_light_model``) and prints it next to the
defaults. Writes a PNG of the distributions.

    python benchmarks/prometheus_realism.py [--n-events 2000] [--replicas 20] \
        [--shared ../shared] [--png docs/figures/prometheus_realism.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
from scipy.stats import ks_2samp

from hepexp.data.prometheus.io import read_events
from hepexp.data.prometheus.simulate import (
    PANDEL_AMANDA,
    SimulationOptions,
    fit_light_model,
    simulate_events,
    simulate_photons,
)


def om_stats(events: ak.Array) -> dict[str, np.ndarray]:
    """Per-event and per-OM summary arrays of an event array."""
    ph = events.photons
    n_ph = ak.to_numpy(ak.num(ph.t))
    ev = np.repeat(np.arange(len(n_ph)), n_ph)
    key = (
        ev * 1_000_000
        + ak.to_numpy(ak.flatten(ph.string_id)) * 1000
        + ak.to_numpy(ak.flatten(ph.sensor_id))
    )
    t = ak.to_numpy(ak.flatten(ph.t))
    uniq, inv, hits = np.unique(key, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, t) / hits
    std = np.sqrt(np.clip(np.bincount(inv, t * t) / hits - mean**2, 0, None))
    t_min = np.full(len(uniq), np.inf)
    t_max = np.full(len(uniq), -np.inf)
    np.minimum.at(t_min, inv, t)
    np.maximum.at(t_max, inv, t)
    multi = hits >= 2
    return {
        "photons per event": n_ph,
        "hit OMs per event": np.bincount(uniq // 1_000_000, minlength=len(n_ph)),
        "photons per hit OM": hits,
        "time std per OM [ns]": std[multi],
        "time span per OM [ns]": (t_max - t_min)[multi],
        "_event_of_om": uniq // 1_000_000,
        "_hits": hits,
    }


def quantiles(x: np.ndarray) -> str:
    q = np.percentile(x, [10, 50, 90]) if len(x) else [np.nan] * 3
    return " / ".join(f"{v:8.4g}" for v in q)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-events", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HEPEXP_SHARED", here.parent / "shared"))
    )
    parser.add_argument(
        "--png", type=Path, default=here / "docs" / "figures" / "prometheus_realism.png"
    )
    args = parser.parse_args()
    real_path = args.shared / "data" / "prometheus" / "example_photons.parquet"
    geo_path = args.shared / "data" / "prometheus" / "icecube.geo"
    real = read_events(real_path)
    real_stats = om_stats(real)

    # --- light-model fit vs defaults
    t0 = time.perf_counter()
    fit = fit_light_model(real, geo_path)
    d = SimulationOptions()
    print(f"light-model fit to the real events ({time.perf_counter() - t0:.1f} s) vs defaults:")
    print(f"  yield_norm           {fit['yield_norm']:8.2f}   default {d.yield_norm}")
    print(
        f"  attenuation_lengths  {np.round(fit['attenuation_lengths'], 1)}   default {d.attenuation_lengths}"
    )
    print(f"  pandel_lambda        {fit['pandel_lambda']:8.2f}   default {d.pandel_lambda}")
    print(f"  pandel_scale         {fit['pandel_scale']:8.2f}   default {d.pandel_scale}")

    # --- population
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = simulate_events(Path(tmp) / "sim.parquet", args.n_events, seed=args.seed)
        sim_time = time.perf_counter() - t0
        sim = read_events(path)
    sim_stats = om_stats(sim)
    print(
        f"\nsimulated {args.n_events} events in {sim_time:.1f} s ({args.n_events / sim_time:.0f} events/s)"
    )
    print(
        f"\npopulation: real (10 events) vs simulated ({args.n_events} events), quantiles 10% / 50% / 90%"
    )
    print(f"{'quantity':24s} {'real':>28s}   {'simulated':>28s}   KS p")
    for name in real_stats:
        if name.startswith("_"):
            continue
        p = ks_2samp(real_stats[name], sim_stats[name]).pvalue
        print(
            f"{name:24s} {quantiles(real_stats[name]):>28s}   {quantiles(sim_stats[name]):>28s}   {p:.3f}"
        )
    print(
        "  (per-OM quantities are correlated within an event, so their KS p-values overstate significance)"
    )

    # --- matched: the real truth re-simulated
    rep = ak.concatenate([real.mc_truth] * args.replicas)
    matched = om_stats(simulate_photons(rep, seed=args.seed, geometry=geo_path))
    amanda = om_stats(simulate_photons(rep, seed=args.seed, geometry=geo_path, **PANDEL_AMANDA))
    n_real = len(real)
    print(
        f"\nmatched: each real event's mc_truth re-simulated {args.replicas} times (sim: median [16%, 84%])"
    )
    print(
        f"{'event':>5s} {'E [TeV]':>8s} {'z [m]':>7s} | {'photons real':>12s} {'sim':>24s} | {'OMs real':>8s} {'sim':>18s} | med photons/OM real sim"
    )
    for i in range(n_real):
        sel = np.arange(i, len(rep), n_real)
        nph = matched["photons per event"][sel]
        nom = matched["hit OMs per event"][sel]
        med_sim = np.median(
            [
                np.median(matched["_hits"][matched["_event_of_om"] == j]) if nom[k] else 0
                for k, j in enumerate(sel)
            ]
        )
        med_real = np.median(real_stats["_hits"][real_stats["_event_of_om"] == i])
        e = real.mc_truth.initial_state_energy[i] / 1e3
        z = real.mc_truth.initial_state_z[i]
        q = np.percentile(nph, [50, 16, 84])
        qo = np.percentile(nom, [50, 16, 84])
        print(
            f"{i:5d} {e:8.1f} {z:7.0f} | {real_stats['photons per event'][i]:12d} {q[0]:9.0f} [{q[1]:6.0f}, {q[2]:6.0f}] | "
            f"{real_stats['hit OMs per event'][i]:8d} {qo[0]:6.0f} [{qo[1]:4.0f}, {qo[2]:4.0f}] | {med_real:5.1f} {med_sim:5.1f}"
        )
    print("\nmatched per-OM quantities, quantiles 10% / 50% / 90%")
    print(
        f"{'quantity':24s} {'real':>28s}   {'sim (fitted Pandel)':>28s}   {'sim (AMANDA Pandel)':>28s}"
    )
    for name in ("photons per hit OM", "time std per OM [ns]", "time span per OM [ns]"):
        print(
            f"{name:24s} {quantiles(real_stats[name]):>28s}   {quantiles(matched[name]):>28s}   {quantiles(amanda[name]):>28s}"
        )

    plot(real_stats, sim_stats, matched, amanda, args.png)
    print(f"\nwrote {args.png}")


def plot(real, sim, matched, amanda, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        "photons per event",
        "hit OMs per event",
        "photons per hit OM",
        "time std per OM [ns]",
        "time span per OM [ns]",
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, name in zip(axes.flat, names, strict=False):
        if name in names[:2]:  # 10 real events: compare cumulative distributions
            for values, label, style in (
                (sim[name], "sim, default injection", {}),
                (matched[name], "sim, real truth", {}),
                (real[name], "real (10 events)", {"color": "k", "lw": 2}),
            ):
                v = np.sort(np.maximum(values, 0.8))
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, **style)
            ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel("cumulative fraction of events")
            continue
        log = name == "photons per hit OM"
        allv = np.concatenate([real[name], sim[name], matched[name]])
        lo, hi = (1, allv.max()) if log else (0, np.percentile(allv, 99.5))
        bins = np.geomspace(lo, hi * 1.01, 30) if log else np.linspace(lo, hi, 40)
        ax.hist(
            sim[name],
            bins=bins,
            density=True,
            histtype="step",
            lw=1.5,
            label="sim, default injection",
        )
        ax.hist(
            matched[name], bins=bins, density=True, histtype="step", lw=1.5, label="sim, real truth"
        )
        if "time" in name:
            ax.hist(
                amanda[name],
                bins=bins,
                density=True,
                histtype="step",
                lw=1,
                ls="--",
                label="sim, real truth, AMANDA Pandel",
            )
        ax.hist(
            real[name],
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.3,
            color="k",
            label="real (10 events)",
        )
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        if name == "time std per OM [ns]":
            ax.legend(fontsize=8)
    axes.flat[0].legend(fontsize=8)
    ax = axes.flat[5]
    ax.scatter(
        real["photons per event"], real["hit OMs per event"], c="k", s=30, label="real", zorder=3
    )
    ax.scatter(
        sim["photons per event"],
        sim["hit OMs per event"],
        s=3,
        alpha=0.3,
        label="sim, default injection",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("photons per event")
    ax.set_ylabel("hit OMs per event")
    ax.legend(fontsize=8)
    fig.suptitle("Prometheus: built-in simulator vs the 10 real events (example_photons.parquet)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main()
