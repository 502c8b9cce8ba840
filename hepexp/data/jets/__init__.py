"""ATLAS trigger jets: 4-vector tables (m, pt, phi, eta)."""

from hepexp.data.jets.datamodule import JetDataModule
from hepexp.data.jets.io import read_jets, write_jets
from hepexp.data.jets.simulate import simulate_jets

__all__ = ["JetDataModule", "read_jets", "simulate_jets", "write_jets"]
