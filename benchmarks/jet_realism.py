"""Realism of the jet simulator: simulated ATLAS-like trigger jets next to real jets.

The only real jets at hand are the 537 AK4 jets of the CMS 2012 Open Data ttbar NanoAOD sample
(pT > 15 GeV, |eta| < 5.2), a different detector and selection than the ATLAS trigger jets
(pT > 20 GeV, |eta| < 4.5) the simulator imitates: compare shapes, not numbers. Prints quantiles
of pT, |eta| and m/pT per pT bin, and writes a figure of the distributions to ``--out``.

    HEPEXP_SHARED=/work/shared PYTHONPATH=$PWD python benchmarks/jet_realism.py --out docs/figures
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.data.jets import read_jets, simulate_jets

CMS_FILE = "data/jets/nanoAOD_2015_CMS_Open_Data_ttbar.root"
PT_BINS = ((15, 20), (20, 30), (30, 60), (60, 150), (150, 4000))
QUANTILES = (0.05, 0.16, 0.5, 0.84, 0.95)


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("HEPEXP_SHARED", default))


def mass_ratio_table(jets: pd.DataFrame) -> pd.DataFrame:
    """Quantiles of m/pT per pT bin (jets in GeV)."""
    rows = []
    for lo, hi in PT_BINS:
        sel = jets[(jets.pt >= lo) & (jets.pt < hi)]
        if len(sel) == 0:
            continue
        q = np.quantile(sel.m / sel.pt, QUANTILES)
        rows.append(
            {"pT bin": f"{lo}-{hi}", "jets": len(sel), **dict(zip(QUANTILES, q, strict=True))}
        )
    return pd.DataFrame(rows).round(3)


def plot(sim: pd.DataFrame, real: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    panels = (
        ("pT [GeV]", lambda j: j.pt, np.geomspace(15, 2000, 30), True),
        ("|eta|", lambda j: np.abs(j.eta), np.linspace(0, 5.2, 27), False),
        ("phi", lambda j: j.phi, np.linspace(-np.pi, np.pi, 19), False),
        ("m / pT", lambda j: j.m / j.pt, np.linspace(-0.02, 0.4, 43), False),
    )
    for ax, (label, fn, bins, log) in zip(axes, panels, strict=True):
        ax.hist(fn(sim), bins=bins, density=True, histtype="step", lw=1.5, label="simulated")
        ax.hist(fn(real), bins=bins, density=True, histtype="step", lw=1.5, label="CMS AK4")
        ax.set_xlabel(label)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
    axes[0].set_ylabel("density")
    axes[0].legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "jet_sim_vs_cms.png", dpi=110)
    print(f"wrote {out / 'jet_sim_vs_cms.png'}")


def read_jets_frame(mev: pd.DataFrame) -> pd.DataFrame:
    """A simulated table (MeV) in GeV, as :func:`read_jets` returns files."""
    return mev.assign(m=mev.m / 1e3, pt=mev.pt / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the figure")
    parser.add_argument("--n", type=int, default=200_000, help="simulated jets")
    args = parser.parse_args()

    real = read_jets(shared_dir() / CMS_FILE)
    sim = read_jets_frame(simulate_jets(args.n, seed=1))
    for name, jets in (("simulated", sim), ("CMS AK4", real)):
        print(f"== {name}: {len(jets)} jets")
        print("pT quantiles 5/50/95%:", np.quantile(jets.pt, [0.05, 0.5, 0.95]).round(1))
        print("|eta| > 2.5:", round(float((np.abs(jets.eta) > 2.5).mean()), 3))
        print("m <= 0:", round(float((jets.m <= 0).mean()), 4))
        print(mass_ratio_table(jets).to_string(index=False))
    if args.out is not None:
        plot(sim, real, args.out)


if __name__ == "__main__":
    main()
