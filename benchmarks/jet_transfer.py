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
from hepexp.metrics.jets import jet_energy, residual_metrics
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


def _columns(jets: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: jets[c].to_numpy(np.float64) for c in ("m", "pt", "phi", "eta")}


def evaluate(model: JetAutoencoder, jets: pd.DataFrame) -> dict[str, float]:
    """Residual metrics of ``model`` on ``jets`` (GeV)."""
    return residual_metrics(_columns(jets), _columns(model.predict(jets, units="GeV")))


def remarks(jets: pd.DataFrame, pred: pd.DataFrame) -> str:
    """The jet with the largest pT residual, and the E std left once the predicted masses are
    rescaled by their median offset (jets with m > 1 GeV in and out): is E's residual an offset
    of the mass or its spread?"""
    rel = (pred.pt - jets.pt) / jets.pt
    worst = rel.abs().idxmax()
    heavy = (jets.m > 1) & (pred.m > 1)
    scale = float(np.exp(-np.median(np.log(pred.m[heavy] / jets.m[heavy]))))
    true_e = jet_energy(*(jets[c].to_numpy(np.float64) for c in ("m", "pt", "eta")))
    scaled_e = jet_energy(pred.m.to_numpy() * scale, pred.pt.to_numpy(), pred.eta.to_numpy())
    without = np.delete(rel.to_numpy(), jets.index.get_loc(worst))
    return (
        f"worst pT residual {rel[worst]:+.3f} (m {jets.m[worst]:.3f} GeV, pT "
        f"{jets.pt[worst]:.1f} -> {pred.pt[worst]:.1f} GeV), pT std without it "
        f"{100 * without.std():.3g}%; predicted masses {100 * (1 / scale - 1):+.0f}% "
        f"(median), E std after rescaling them {100 * np.std((scaled_e - true_e) / true_e):.3g}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="label=path of a jet_ae checkpoint")
    parser.add_argument("--n", type=int, default=50_000, help="simulated jets per sample")
    args = parser.parse_args()

    jets = samples(args.n)
    rows, notes = [], []
    for item in args.checkpoints:
        label, _, path = item.rpartition("=")
        model = hepexp.load_model(path)
        for name, sample in jets.items():
            pred = model.predict(sample, units="GeV")
            metrics = residual_metrics(_columns(sample), _columns(pred))
            rows.append(
                {"model": label or path, "jets": name}
                | {short: metrics[key] for key, short in COLUMNS.items()}
            )
            notes.append(f"- {label or path}, {name}: {remarks(sample, pred)}")
    table = pd.DataFrame(rows)
    pct = [c for c in table.columns if c.endswith(("std", "sigma68"))]
    table[pct] = table[pct].map(lambda v: f"{100 * v:.3g}%")
    for c in ("eta RMS", "phi RMS"):
        table[c] = table[c].map(lambda v: f"{v:.2g}")
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(map(str, row)) + " |")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
