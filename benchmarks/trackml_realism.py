"""Realism of the TrackML simulator: a simulated event next to the real one.

Compares the real 5% subsample of TrackML event 1 (548 particles, from ../shared) with simulated
events of the same size (430 primaries, which with their secondaries give ~548 particles),
averaged over several seeds: hit share per volume, noise fraction, hits per particle, pT,
eta, particles without hits, primaries, cluster sizes, double hits per layer, multiple
scattering. Prints a table and writes a figure (r-z of hits, histograms) to ``--out``; also
times the simulation of a full-size event (8000 primaries: ~10k particles, ~100k hits).

    HEPEXP_SHARED=/work/shared PYTHONPATH=$PWD python benchmarks/trackml_realism.py --out /tmp/realism
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.data.trackml.io import load_event
from hepexp.data.trackml.simulate import simulate_event

VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)
ETA_BINS = np.arange(-4.0, 4.01, 1.0)
NHITS_BINS = np.array([0, 1, 4, 8, 10, 12, 14, 16, 100])
MASS = {11: 0.000511, 13: 0.105658, 211: 0.13957, 321: 0.493677, 2212: 0.938272}

#: primaries of the simulated event used for the comparison (430 primaries + secondaries
#: = about the 548 particles of the real subsample, of which 430 are primaries)
N_PRIMARIES = 430
FULL_PRIMARIES = 8000


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("HEPEXP_SHARED", default))


def event_stats(
    hits: pd.DataFrame, cells: pd.DataFrame, particles: pd.DataFrame, truth: pd.DataFrame
) -> dict[str, float | np.ndarray]:
    """Summary numbers of one event (see module docstring)."""
    d = hits.merge(truth, on="hit_id")
    noise = d["particle_id"].to_numpy() == 0
    s = {}
    s["particles"] = len(particles)
    s["hits"] = len(hits)
    s["noise %"] = 100 * noise.mean()
    share = d["volume_id"].value_counts(normalize=True)
    for v in VOLUMES:
        s[f"vol {v} %"] = 100 * share.get(v, 0.0)
    noise_share = d.loc[noise, "volume_id"].value_counts(normalize=True)
    s["noise in 13+17 %"] = 100 * (noise_share.get(13, 0.0) + noise_share.get(17, 0.0))
    nh = particles["nhits"].to_numpy()
    s["median hits/particle (with hits)"] = float(np.median(nh[nh > 0])) if (nh > 0).any() else 0
    s["mean hits/particle (with hits)"] = float(nh[nh > 0].mean()) if (nh > 0).any() else 0
    s["no-hit particles %"] = 100 * (nh == 0).mean()
    pid = particles["particle_id"].to_numpy()
    gen = (pid >> 24) & 0xFFF
    s["primaries %"] = 100 * (gen == 0).mean()
    pt = np.hypot(particles["px"], particles["py"]).to_numpy()
    s["median pT (GeV)"] = float(np.median(pt))
    s["pT > 1 GeV %"] = 100 * (pt > 1).mean()
    s["median pT primaries"] = float(np.median(pt[gen == 0]))
    p = np.sqrt(pt**2 + particles["pz"].to_numpy() ** 2)
    eta = np.arctanh(particles["pz"].to_numpy() / p)
    s["abs(eta) > 2 %"] = 100 * (np.abs(eta) > 2).mean()
    sig = d[~noise]
    per_layer = sig.groupby(["particle_id", "volume_id", "layer_id"]).size()
    s["layers with 2+ hits %"] = 100 * (per_layer >= 2).mean()
    ncell = cells.groupby("hit_id").size()
    n_by_vol = d.assign(n=d["hit_id"].map(ncell)).groupby("volume_id")["n"].mean()
    for v in (8, 9, 13, 17):
        s[f"cells/hit vol {v}"] = float(n_by_vol.get(v, np.nan))
    s.update(_scattering(d[~noise], particles))
    s["nhits_hist"] = np.histogram(nh, NHITS_BINS)[0] / max(len(nh), 1)
    s["eta_hist"] = np.histogram(eta, ETA_BINS)[0] / max(len(eta), 1)
    return s


def _scattering(sig: pd.DataFrame, particles: pd.DataFrame) -> dict[str, float]:
    """Robust width of polar-angle changes between consecutive hits in the barrel volumes,
    scaled by p beta / 13.6 MeV: sqrt(x/X0) x (1 + 0.038 ln x) of the material in between."""
    d = sig.merge(particles[["particle_id", "vx", "vy", "vz", "particle_type"]], on="particle_id")
    d["dist"] = np.sqrt((d.tx - d.vx) ** 2 + (d.ty - d.vy) ** 2 + (d.tz - d.vz) ** 2)
    d = d.sort_values(["particle_id", "dist"])
    p = np.sqrt(d.tpx**2 + d.tpy**2 + d.tpz**2)
    d["p"] = p
    d["theta"] = np.arccos(d.tpz / p)
    g = d.groupby("particle_id")
    d["dtheta"] = g["theta"].diff()
    d["prev_p"] = g["p"].shift()
    d["prev_layer"] = g["layer_id"].shift()
    d["prev_vol"] = g["volume_id"].shift()
    d = d[d.dtheta.notna() & ((d.prev_layer != d.layer_id) | (d.prev_vol != d.volume_id))]
    mass = d.particle_type.abs().map(MASS).to_numpy()
    beta = d.prev_p / np.sqrt(d.prev_p**2 + mass**2)
    x = d.dtheta * d.prev_p * beta / 0.0136
    rel_dp = (d.p - d.prev_p) / d.prev_p
    out = {}
    for v in (8, 13, 17, 9):
        a = x[d.volume_id == v].to_numpy()
        out[f"MS width vol {v}"] = float(1.4826 * np.median(np.abs(a - np.median(a))))
    for v in (8, 13):
        out[f"median dp/p vol {v} (1e-3)"] = 1e3 * float(np.median(rel_dp[d.volume_id == v]))
    return out


def simulate_stats(seeds: list[int], **options) -> tuple[dict, list[tuple]]:
    """Mean of :func:`event_stats` over simulated events; also returns the events."""
    rows, events = [], []
    for seed in seeds:
        ev = simulate_event(N_PRIMARIES, seed, **options)
        events.append(ev)
        rows.append(event_stats(*ev))
    mean = {k: np.mean([r[k] for r in rows], axis=0) for k in rows[0]}
    return mean, events


def plot(real: tuple, sim: tuple, real_s: dict, sim_s: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for ax, (name, (hits, _, _, truth)) in zip(
        axes[0, :2], [("real", real), ("simulated", sim)], strict=True
    ):
        noise = truth.set_index("hit_id").loc[hits.hit_id, "particle_id"].to_numpy() == 0
        r = np.hypot(hits.x, hits.y)
        ax.scatter(hits.z[~noise], r[~noise], s=1, c="C0", label="signal")
        ax.scatter(hits.z[noise], r[noise], s=1, c="C3", label="noise")
        ax.set(title=f"{name}: r-z of hits", xlabel="z (mm)", ylabel="r (mm)")
        ax.legend(markerscale=8, loc="upper right")
    ax = axes[0, 2]
    x = np.arange(len(VOLUMES))
    ax.bar(x - 0.2, [real_s[f"vol {v} %"] for v in VOLUMES], 0.4, label="real")
    ax.bar(x + 0.2, [sim_s[f"vol {v} %"] for v in VOLUMES], 0.4, label="simulated (mean)")
    ax.set(
        xticks=x,
        xticklabels=VOLUMES,
        xlabel="volume_id",
        ylabel="% of hits",
        title="hit share per volume",
    )
    ax.legend()
    ax = axes[1, 0]
    labels = [f"{a}-{b - 1}" for a, b in zip(NHITS_BINS[:-1], NHITS_BINS[1:], strict=True)]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, real_s["nhits_hist"], 0.4, label="real")
    ax.bar(x + 0.2, sim_s["nhits_hist"], 0.4, label="simulated")
    ax.set(
        xticks=x,
        xticklabels=labels,
        xlabel="hits per particle",
        ylabel="fraction",
        title="hits per particle",
    )
    ax.legend()
    ax = axes[1, 1]
    centres = (ETA_BINS[:-1] + ETA_BINS[1:]) / 2
    ax.bar(centres - 0.2, real_s["eta_hist"], 0.4, label="real")
    ax.bar(centres + 0.2, sim_s["eta_hist"], 0.4, label="simulated")
    ax.set(xlabel="particle eta", ylabel="fraction", title="eta of particles")
    ax.legend()
    ax = axes[1, 2]
    bins = np.geomspace(0.1, 20, 30)
    for name, ev in (("real", real), ("simulated", sim)):
        pt = np.hypot(ev[2].px, ev[2].py)
        ax.hist(pt, bins, histtype="step", density=True, label=name, lw=2)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="particle pT (GeV)",
        ylabel="density",
        title="pT of particles",
    )
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trackml_realism.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--field", default="uniform", choices=["uniform", "falling"])
    args = parser.parse_args()
    prefix = shared_dir() / "data" / "trackml" / "event000000001"
    if not Path(f"{prefix}-hits.csv.gz").exists():
        print(f"real event absent: {prefix}-hits.csv.gz (set HEPEXP_SHARED)", file=sys.stderr)
        return 1
    real = load_event(prefix)
    real_s = event_stats(*real)
    t0 = time.perf_counter()
    sim_s, events = simulate_stats(list(range(args.seeds)), field=args.field)
    elapsed = time.perf_counter() - t0
    width = max(len(k) for k in real_s)
    print(f"{'quantity':<{width}}  {'real':>9}  {'simulated':>9}   ({args.seeds} seeds)")
    for key, value in real_s.items():
        if isinstance(value, np.ndarray):
            continue
        print(f"{key:<{width}}  {value:9.3f}  {sim_s[key]:9.3f}")
    print(f"hits-per-particle fractions {NHITS_BINS.tolist()}:")
    print("  real", np.round(real_s["nhits_hist"], 3).tolist())
    print("  sim ", np.round(sim_s["nhits_hist"], 3).tolist())
    print(f"eta fractions {ETA_BINS.tolist()}:")
    print("  real", np.round(real_s["eta_hist"], 3).tolist())
    print("  sim ", np.round(sim_s["eta_hist"], 3).tolist())
    print(f"simulation: {elapsed / args.seeds * 1000:.0f} ms per event of {N_PRIMARIES} primaries")
    times = []
    for seed in range(3):  # a full-size event: ~10k particles, ~100k hits
        t0 = time.perf_counter()
        hits, cells, particles, _ = simulate_event(FULL_PRIMARIES, 100 + seed, field=args.field)
        times.append(time.perf_counter() - t0)
    print(
        f"full event: {FULL_PRIMARIES} primaries -> {len(particles)} particles, {len(hits)} hits, "
        f"{len(cells)} cells in {min(times):.2f} s (best of 3)"
    )
    path = plot(real, events[0], real_s, sim_s, args.out)
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
