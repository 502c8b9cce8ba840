"""Reading and writing jet tables (m, pt, phi, eta) in Parquet, CSV, ROOT and pandas pickles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.errors import DataError
from hepexp.utils.io import atomic_path

JET_COLUMNS = ("m", "pt", "phi", "eta")
UNIT_SCALE_TO_GEV = {"MeV": 1e-3, "GeV": 1.0, "TeV": 1e3}
#: Units assumed when ``units`` is not given: ATLAS jet tables are in MeV, ROOT ntuples in GeV.
DEFAULT_UNITS = {"table": "MeV", "root": "GeV"}
_NANOAOD = ("Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass")
_CARTESIAN = ("Jet_Px", "Jet_Py", "Jet_Pz", "Jet_E")
#: Plausible median jet pT in GeV; outside it the units are almost certainly wrong.
_PLAUSIBLE_MEDIAN_PT_GEV = (1.0, 5000.0)


def jet_format(path: str | os.PathLike) -> str:
    """File kind from its name: ``parquet``, ``csv``, ``root`` or ``pickle``."""
    name = Path(path).name.lower()
    for suffixes, kind in (
        ((".parquet", ".pq"), "parquet"),
        ((".csv", ".csv.gz", ".txt"), "csv"),
        ((".root",), "root"),
        ((".pkl", ".pickle", ".pkl.gz"), "pickle"),
    ):
        if name.endswith(suffixes):
            return kind
    raise DataError(path, None, "unknown jet table format; use .parquet, .csv, .root or .pkl")


def read_jets(
    path: str | os.PathLike,
    units: str | None = None,
    allow_pickle: bool = False,
    tree: str | None = None,
) -> pd.DataFrame:
    """Read a jet table and return float64 columns m, pt, phi, eta with m and pt in GeV.

    ``units`` is the unit of m and pt in the file (``MeV``, ``GeV`` or ``TeV``); ``None`` means
    MeV for tables (the ATLAS convention) and GeV for ROOT files. Pickles are refused unless
    ``allow_pickle`` is true, because unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    kind = jet_format(path)
    if kind == "parquet":
        frame = pd.read_parquet(path)
    elif kind == "csv":
        frame = pd.read_csv(path)
    elif kind == "root":
        frame = _read_root(path, tree)
    else:
        if not allow_pickle:
            raise DataError(
                path,
                None,
                "refusing to unpickle: a pickle can execute arbitrary code when loaded. If you "
                "trust this file, set data.allow_pickle=true, or convert it once with "
                f"python -c \"import pandas as pd; pd.read_pickle('{path}').to_parquet('{path.with_suffix('.parquet')}')\"",
            )
        frame = pd.read_pickle(path)
    return validate_jets(frame, resolve_units(path, units), source=path)


def resolve_units(path: str | os.PathLike, units: str | None) -> str:
    """The unit of m and pt in ``path``: ``units`` if given, else the format's convention."""
    if units is not None:
        return units
    return DEFAULT_UNITS["root" if jet_format(path) == "root" else "table"]


def _read_root(path: Path, tree_name: str | None) -> pd.DataFrame:
    import awkward as ak
    import uproot

    with uproot.open(path) as file:
        trees = {
            name.split(";")[0]: obj
            for name, obj in file.items(recursive=True)
            if isinstance(obj, uproot.TTree)
        }
        if tree_name is not None:
            if tree_name not in trees:
                raise DataError(path, tree_name, f"no such TTree; trees: {sorted(trees)}")
            trees = {tree_name: trees[tree_name]}
        for tree in trees.values():
            branches = set(tree.keys())
            for wanted in (_NANOAOD, _CARTESIAN, JET_COLUMNS):
                if set(wanted) <= branches:
                    arrays = {
                        b: ak.to_numpy(ak.flatten(tree[b].array(), axis=None)) for b in wanted
                    }
                    if wanted is _CARTESIAN:
                        return _from_cartesian(*(arrays[b].astype(np.float64) for b in wanted))
                    return pd.DataFrame(
                        {
                            col: arrays[b]
                            for col, b in zip(JET_COLUMNS, _reorder(wanted), strict=True)
                        }
                    )
        raise DataError(
            path,
            None,
            "no TTree with jet branches; expected Jet_pt/Jet_eta/Jet_phi/Jet_mass, "
            f"Jet_Px/Jet_Py/Jet_Pz/Jet_E or m/pt/phi/eta (trees: {sorted(trees)})",
        )


def _reorder(branches: tuple[str, ...]) -> tuple[str, ...]:
    """Branch names in the order of JET_COLUMNS (m, pt, phi, eta)."""
    if branches == _NANOAOD:
        return ("Jet_mass", "Jet_pt", "Jet_phi", "Jet_eta")
    return branches


def _from_cartesian(px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray) -> pd.DataFrame:
    """(px, py, pz, E) -> (m, pt, phi, eta); m is negative where E^2 < p^2 (as detectors report)."""
    pt = np.hypot(px, py)
    m2 = e**2 - (pt**2 + pz**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, np.sign(pz) * 1e9))
    return pd.DataFrame(
        {"m": np.sign(m2) * np.sqrt(np.abs(m2)), "pt": pt, "phi": np.arctan2(py, px), "eta": eta}
    )


def validate_jets(
    frame: pd.DataFrame, units: str, source: str | os.PathLike = "jets"
) -> pd.DataFrame:
    """Checked float64 columns m, pt, phi, eta of ``frame`` with m and pt converted from
    ``units`` (MeV, GeV, TeV) to GeV, as :func:`read_jets` returns them; errors name
    ``source``."""
    if units not in UNIT_SCALE_TO_GEV:
        raise DataError(
            source, None, f"unknown units '{units}'; use one of {list(UNIT_SCALE_TO_GEV)}"
        )
    missing = [c for c in JET_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            source,
            missing[0],
            f"missing column(s) {missing}; a jet table needs {list(JET_COLUMNS)} "
            f"(found {list(frame.columns)[:12]})",
        )
    out = {}
    for col in JET_COLUMNS:
        try:
            values = pd.to_numeric(frame[col], errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as err:
            raise DataError(source, col, f"expected numbers ({err})") from None
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                source,
                col,
                f"{bad.sum()} of {len(values)} values are NaN or infinite "
                f"(first at row {np.flatnonzero(bad)[0]})",
            )
        out[col] = values
    if len(frame) == 0:
        raise DataError(source, None, "the table has no jets")
    scale = UNIT_SCALE_TO_GEV[units]
    out["m"] = out["m"] * scale
    out["pt"] = out["pt"] * scale
    if (out["pt"] < 0).any():
        raise DataError(source, "pt", "negative transverse momenta")
    median_pt = float(np.median(out["pt"]))
    low, high = _PLAUSIBLE_MEDIAN_PT_GEV
    if not low <= median_pt <= high:
        guess = "GeV" if median_pt < low else "MeV"
        raise DataError(
            source,
            "pt",
            f"median pt is {median_pt:.4g} GeV when read as {units}: wrong units? "
            f"The file looks like it is in {guess}; set data.units={guess}",
        )
    return pd.DataFrame(out)


def write_jets(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a table atomically as Parquet or CSV (chosen by the file name)."""
    kind = jet_format(path)
    with atomic_path(path) as tmp:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        elif kind == "csv":
            frame.to_csv(tmp, index=False)
        else:
            raise DataError(path, None, "jet tables are written as .parquet or .csv")
