"""The memory-mapped record store behind cached datasets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from hepexp.data.store import RecordStore, RecordStoreWriter
from hepexp.utils.io import atomic_path


def test_ragged_records_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        {
            "x": rng.normal(size=(n, 3)).astype(np.float32),
            "id": np.arange(n, dtype=np.int64) + 100 * i,
        }
        for i, n in enumerate([5, 0, 17, 3])
    ]
    writer = RecordStoreWriter(tmp_path / "s")
    for r in records:
        writer.append(r)
    assert not (tmp_path / "s").exists(), "nothing under the final name before close()"
    store = writer.close()
    assert len(store) == 4 and store.num_rows == 25
    for i, r in enumerate(records):
        got = store.record(i)
        np.testing.assert_array_equal(got["x"], r["x"])
        np.testing.assert_array_equal(got["id"], r["id"])
    np.testing.assert_array_equal(store.column("id")[5:7], [200, 201])
    # survives pickling into DataLoader workers, re-opening its maps lazily
    clone = pickle.loads(pickle.dumps(RecordStore(tmp_path / "s")))
    np.testing.assert_array_equal(clone.record(2)["x"], records[2]["x"])


def test_inconsistent_records_are_rejected(tmp_path: Path) -> None:
    writer = RecordStoreWriter(tmp_path / "s")
    writer.append({"a": np.zeros(3), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="differ in length"):
        writer.append({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="column a"):
        writer.append({"a": np.zeros((3, 2)), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="differ from"):
        writer.append({"a": np.zeros(3)})


def test_atomic_path_gives_the_usual_file_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
