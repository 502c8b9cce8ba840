"""ATLAS trigger jets: 4-vector tables (m, pt, phi, eta)."""

from __future__ import annotations

from typing import Any

from hepexp.data.jets.io import JET_COLUMNS, read_jets, validate_jets, write_jets
from hepexp.data.jets.simulate import simulate_jets

__all__ = [
    "JET_COLUMNS",
    "JetDataModule",
    "read_jets",
    "simulate_jets",
    "validate_jets",
    "write_jets",
]


def __getattr__(name: str) -> Any:
    # the data module needs torch and Lightning: imported on first use only
    if name == "JetDataModule":
        from hepexp.data.jets.datamodule import JetDataModule

        return JetDataModule
    raise AttributeError(f"module 'hepexp.data.jets' has no attribute '{name}'")
