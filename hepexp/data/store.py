"""An on-disk store of ragged records, memory-mapped for lazy, random access.

A record is a dict of numpy arrays sharing a leading length (the hits of an event, the tracks of
an event, ...). Each column is appended to a raw file as records arrive, so writing needs memory
for one record only, and reading maps the files without loading them. Rows of all records form
one flat table (``column(name)[i]``); ``record(i)`` slices one record back out.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hepexp.utils.io import write_json

_META = "store.json"


class RecordStoreWriter:
    """Append records to a new store in ``path`` (a directory); ``close()`` finalises it.

    The store appears under ``path`` only when closed: it is written to ``path.tmp`` first.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.columns: dict[str, dict] = {}
        self.files: dict[str, object] = {}
        self.lengths: list[int] = []

    def append(self, record: Mapping[str, np.ndarray]) -> None:
        lengths = {len(v) for v in record.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"record columns differ in length: { {k: len(v) for k, v in record.items()} }"
            )
        if self.columns and set(record) != set(self.columns):
            raise ValueError(f"record columns {sorted(record)} differ from {sorted(self.columns)}")
        for name, values in record.items():
            values = np.ascontiguousarray(values)
            spec = {"dtype": values.dtype.str, "shape": list(values.shape[1:])}
            if name not in self.columns:
                self.columns[name] = spec
                self.files[name] = open(self.tmp / f"{name}.bin", "wb")  # noqa: SIM115
            elif self.columns[name] != spec:
                raise ValueError(f"column {name}: {spec} differs from {self.columns[name]}")
            self.files[name].write(values.tobytes())
        self.lengths.append(lengths.pop())

    def close(self, extra: Mapping | None = None) -> RecordStore:
        for f in self.files.values():
            f.close()
        offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        np.save(self.tmp / "offsets.npy", offsets)
        write_json(self.tmp / _META, {"columns": self.columns, "extra": dict(extra or {})})
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return RecordStore(self.path)


class RecordStore:
    """Read side of a store written by :class:`RecordStoreWriter`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / _META).read_text())
        self.specs = meta["columns"]
        self.extra = meta["extra"]
        self.offsets = np.load(self.path / "offsets.npy")
        self._maps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        """Number of records."""
        return len(self.offsets) - 1

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def column(self, name: str) -> np.ndarray:
        """The whole column over all rows, memory-mapped (read-only)."""
        if name not in self._maps:
            spec = self.specs[name]
            shape = (self.num_rows, *spec["shape"])
            if self.num_rows == 0:
                self._maps[name] = np.zeros(shape, dtype=np.dtype(spec["dtype"]))
            else:
                self._maps[name] = np.memmap(
                    self.path / f"{name}.bin", dtype=np.dtype(spec["dtype"]), mode="r", shape=shape
                )
        return self._maps[name]

    def record(self, i: int, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Record ``i`` as in-memory arrays."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return {name: np.array(self.column(name)[lo:hi]) for name in (columns or self.specs)}

    def __getstate__(self) -> dict:  # memmaps are reopened in DataLoader workers
        return {**self.__dict__, "_maps": {}}
