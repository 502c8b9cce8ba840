"""Jet autoencoders trained on simulation, applied to jets they were not trained on.

For each checkpoint, the published statistics (standard deviation of the relative pT and E
residuals, absolute RMS of eta and phi, the HEPAutoencoders relative std of eta and phi) and the
mass (sigma68 and std of the relative residual, jets with m > 1 GeV) on:

- fresh simulated jets (a new seed: neither the training nor the test split);
- fresh simulated jets stretched beyond the training acceptance (pT from 15 GeV instead of 20,
  |eta| up to 5.2 instead of 4.5), the kind of jets a model meets on another experiment's file;
- the 537 CMS 2012 Open Data ttbar AK4 jets (NanoAOD, GeV), all of them and those inside the
  ATLAS trigger acceptance (pT >= 20 GeV, |eta| <= 4.5) that the simulator imitates.

    HEPEXP_SHARED=/work/shared python benchmarks/jet_transfer.py default=<best.ckpt> skip=<...>
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

import hepexp
from hepexp.data.jets import read_jets, simulate_jets
from hepexp.metrics.jets import residual_metrics
from hepexp.models.jet_ae import JetAutoencoder

CMS_FILE = "data/jets/nanoAOD_2015_CMS_Open_Data_ttbar.root"
COLUMNS = {
    "pt_rel_std": "pT std",
    "E_rel_std": "E std",
    "eta_abs_rms": "eta RMS",
    "phi_abs_rms": "phi RMS",
    "eta_rel_std_hepae": "eta rel std",
    "phi_rel_std_hepae": "phi rel std",
    "m_rel_sigma68_m_gt_1GeV": "m sigma68",
    "m_rel_std_m_gt_1GeV": "m std",
}


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("HEPEXP_SHARED", default))


def samples(n_jets: int) -> dict[str, pd.DataFrame]:
    """The jet samples (m, pt in GeV) by name."""
    fresh = simulate_jets(n_jets, seed=2026)
    fresh[["m", "pt"]] /= 1e3
    stretched = simulate_jets(n_jets, seed=2027)
    stretched[["m", "pt"]] *= 0.75e-3  # pT from 15 GeV, m/pT kept
    stretched["eta"] *= 5.2 / 4.5
    cms = read_jets(shared_dir() / CMS_FILE)
    inside = cms[(cms.pt >= 20) & (cms.eta.abs() <= 4.5)]
    return {
        f"simulated ({n_jets:,})": fresh,
        "simulated beyond acceptance": stretched,
        f"CMS, all ({len(cms)})": cms,
        f"CMS in acceptance ({len(inside)})": inside,
    }


def evaluate(model: JetAutoencoder, jets: pd.DataFrame) -> dict[str, float]:
    """Residual metrics of ``model`` on ``jets`` (GeV)."""
    pred = model.predict(jets, units="GeV")
    as_dict = lambda t: {c: t[c].to_numpy(np.float64) for c in ("m", "pt", "phi", "eta")}  # noqa: E731
    return residual_metrics(as_dict(jets), as_dict(pred))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="label=path of a jet_ae checkpoint")
    parser.add_argument("--n", type=int, default=50_000, help="simulated jets per sample")
    args = parser.parse_args()

    jets = samples(args.n)
    rows = []
    for item in args.checkpoints:
        label, _, path = item.rpartition("=")
        model = hepexp.load_model(path)
        for name, sample in jets.items():
            metrics = evaluate(model, sample)
            rows.append(
                {"model": label or path, "jets": name}
                | {short: metrics[key] for key, short in COLUMNS.items()}
            )
    table = pd.DataFrame(rows)
    pct = [c for c in table.columns if c.endswith(("std", "sigma68"))]
    table[pct] = table[pct].map(lambda v: f"{100 * v:.3g}%")
    for c in ("eta RMS", "phi RMS"):
        table[c] = table[c].map(lambda v: f"{v:.2g}")
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
