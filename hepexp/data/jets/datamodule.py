"""data=atlas_jets: jet 4-vectors from simulated or real tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hepexp.data.base import HEPDataModule
from hepexp.data.cache import ensure_generated
from hepexp.data.jets.io import JET_COLUMNS, read_jets, write_jets
from hepexp.data.jets.simulate import simulate_jets
from hepexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class JetTensorDataset(Dataset):
    """Rows of a (N, F) tensor; fetches whole batches at once through ``__getitems__``."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.values[index]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.values[torch.as_tensor(indices)]


#: the default normalisation of (m, pt, phi, eta), m and pt in GeV: y = (f(x + offset) - loc) /
#: scale (see :mod:`hepexp.data.transforms`)
STANDARD_TRANSFORMS: tuple[dict[str, Any], ...] = (
    {"name": "m", "fn": "log10", "offset": 1.0, "loc": 0.0, "scale": 1.8},
    {"name": "pt", "fn": "log10", "loc": 1.3, "scale": 1.2},
    {"name": "phi", "loc": 0.0, "scale": 3.0},
    {"name": "eta", "loc": 0.0, "scale": 5.0},
)


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


class JetDataModule(HEPDataModule):
    """Jet tables: simulated (``source: simulate``) or real files.

    Real data is given either as ``train_path`` (+ optional ``val_path``, ``test_path``; missing
    splits are cut from the training file) or as ``source: <path>``: one table (split by
    ``val_fraction``/``test_fraction``) or a directory holding ``train.*``, ``val.*``, ``test.*``.
    m and pt are handed to models in GeV whatever the file units.
    """

    views = {"jet_vectors": "one jet per sample: (m, pt, phi, eta) with m, pt in GeV"}
    file_keys = ("train_path", "val_path", "test_path")

    def __init__(
        self,
        view: str = "jet_vectors",
        source: str = "simulate",
        data_dir: str = "data/atlas_jets",
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        units: str | None = None,
        allow_pickle: bool = False,
        root_tree: str | None = None,
        features: Sequence[str] = JET_COLUMNS,
        transforms: Sequence[Mapping[str, Any]] = STANDARD_TRANSFORMS,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        simulation: Mapping[str, Any] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(view, batch_size, num_workers, pin_memory, seed)
        if tuple(features) != JET_COLUMNS:
            raise ConfigError(f"data.features must be {list(JET_COLUMNS)}, got {list(features)}")
        self.source = source
        self.data_dir = Path(data_dir)
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        self.units = units
        self.allow_pickle = allow_pickle
        self.root_tree = root_tree
        self.features = list(features)
        self.transforms = [dict(t) for t in transforms]
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.simulation = dict(
            simulation or {"n_train": 100_000, "n_val": 10_000, "n_test": 30_000}
        )
        self.tables: dict[str, pd.DataFrame] = {}

    # -- reading -------------------------------------------------------------------------------
    def read(self, path: str | Path, units: str | None = None) -> pd.DataFrame:
        """Read one jet table with this source's units and safety settings (m, pt in GeV)."""
        return read_jets(
            path, units=units or self.units, allow_pickle=self.allow_pickle, tree=self.root_tree
        )

    def prepare_data(self) -> None:
        if self._uses_simulation():
            self._simulated_dir()

    def _uses_simulation(self) -> bool:
        return self.paths["train"] is None and self.source == "simulate"

    def _simulated_dir(self) -> Path:
        settings = {"generator": "hepexp.data.jets.simulate_jets/2", **self.simulation}
        counts = {s: int(settings.get(f"n_{s}", 0)) for s in SPLITS}
        options = {k: v for k, v in settings.items() if not k.startswith("n_") and k != "generator"}
        base_seed = int(options.pop("seed", 12345))

        def generate(tmp: Path) -> None:
            for i, split in enumerate(SPLITS):
                jets = simulate_jets(counts[split], seed=base_seed + i, **options)
                write_jets(tmp / f"{split}.parquet", jets)

        return ensure_generated(self.data_dir / "simulated", settings, generate)

    def _load_tables(self) -> dict[str, pd.DataFrame]:
        if self._uses_simulation():
            directory = self._simulated_dir()  # written in the ATLAS format: MeV
            return {s: self.read(directory / f"{s}.parquet", units="MeV") for s in SPLITS}
        if self.paths["train"] is not None:
            given = {s: self.read(p) for s, p in self.paths.items() if p is not None}
            return self._split_missing(given)
        source = Path(self.source)
        if source.is_dir():
            found = {}
            for split in SPLITS:
                matches = sorted(p for p in source.iterdir() if p.name.split(".")[0] == split)
                if matches:
                    found[split] = self.read(matches[0])
            if "train" not in found:
                raise DataError(source, None, "directory has no train.* jet table")
            return self._split_missing(found)
        if source.exists():
            return self._split_missing({"train": self.read(source)})
        raise DataError(source, None, "data.source is neither 'simulate' nor an existing path")

    def _split_missing(self, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """Cut missing val/test splits from the training table (seeded, disjoint)."""
        train = tables["train"]
        fractions = {s: f for s, f in (("val", self.val_fraction), ("test", self.test_fraction))}
        missing = [s for s in ("val", "test") if s not in tables]
        if not missing:
            return tables
        order = np.random.default_rng(self.seed).permutation(len(train))
        start = 0
        for split in missing:
            n = int(round(fractions[split] * len(train)))
            if n == 0:
                raise ConfigError(
                    f"data.{split}_fraction={fractions[split]} leaves no {split} jets"
                )
            tables[split] = train.iloc[order[start : start + n]].reset_index(drop=True)
            start += n
            log.info("cut the %s split (%d jets) from the training table", split, n)
        tables["train"] = train.iloc[order[start:]].reset_index(drop=True)
        return tables

    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        self.tables = self._load_tables()
        for split, table in self.tables.items():
            values = torch.tensor(table[self.features].to_numpy(np.float32))
            self.datasets[split] = JetTensorDataset(values)

    def fit_sample(self) -> torch.Tensor:
        return self.dataset("train").values

    def table(self, split: str) -> pd.DataFrame:
        """The jets of ``split`` as a DataFrame (m, pt in GeV)."""
        self.dataset(split)
        return self.tables[split]

    def loader(self, split: str, shuffle: bool | None = None, **kwargs: Any):
        kwargs.setdefault("collate_fn", _identity)
        return super().loader(split, shuffle, **kwargs)
