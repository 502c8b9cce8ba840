"""ATLAS trigger jets: 4-vector tables (m, pt, phi, eta)."""

from __future__ import annotations

from hepexp.data.jets.io import JET_COLUMNS, read_jets, validate_jets, write_jets
from hepexp.data.jets.simulate import simulate_jets
from hepexp.utils.lazy import lazy_exports

__all__ = [
    "JET_COLUMNS",
    "JetDataModule",
    "read_jets",
    "simulate_jets",
    "validate_jets",
    "write_jets",
]


# imported on first use: it needs torch (and Lightning)
__getattr__ = lazy_exports(__name__, {"JetDataModule": "hepexp.data.jets.datamodule"})
