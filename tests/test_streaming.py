"""ParquetStream: every row exactly once per epoch across DDP ranks x DataLoader workers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from hepexp.data.streaming import ParquetStream, resolve_rank


def write_parts(tmp_path, row_groups_per_file: list[list[int]]) -> list:
    """Files whose row groups have the given (uneven) sizes; column ``id`` numbers all rows."""
    files, next_id = [], 0
    for i, sizes in enumerate(row_groups_per_file):
        path = tmp_path / f"part-{i}.parquet"
        with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("x", pa.float32())])) as w:
            for n in sizes:
                ids = np.arange(next_id, next_id + n)
                w.write_table(
                    pa.table({"id": ids, "x": ids.astype(np.float32) / 2}), row_group_size=n
                )
                next_id += n
        assert [
            pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(len(sizes))
        ] == sizes
        files.append(path)
    return files, next_id


def collect(ds: ParquetStream, num_workers: int) -> list[np.ndarray]:
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return [np.asarray(b["id"]) for b in loader]


@pytest.mark.parametrize(
    ("layout", "shuffle"),
    [
        ([[13, 5, 1], [40], [2, 2, 2, 9], [7]], True),  # uneven row groups, more units than shards
        ([[13, 5, 1], [40], [2, 2, 2, 9], [7]], False),
        ([[10]], True),  # a single row group: fewer units than shards -> split by rows
    ],
)
def test_two_ranks_two_workers_see_every_row_once(tmp_path, layout, shuffle):
    files, n = write_parts(tmp_path, layout)
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            ds = ParquetStream(
                files,
                batch_size=4,
                shuffle=shuffle,
                shuffle_buffer=16,
                seed=5,
                rank=rank,
                world_size=2,
            )
            ds.set_epoch(epoch)
            batches = collect(ds, num_workers=2)
            assert all(len(b) <= 4 for b in batches)
            per_rank.append(np.concatenate(batches))
        everything = np.concatenate(per_rank)
        assert len(everything) == n and np.array_equal(
            np.sort(everything), np.arange(n)
        )  # exactly once
        assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1  # balanced ranks
        assert not set(per_rank[0]) & set(per_rank[1])
        if epoch == 0:
            first = everything
    if shuffle and n > 10:
        assert not np.array_equal(first, everything)  # the epoch changes the order
    if not shuffle:  # contiguous ranges: rank 0 gets the first half, rank 1 the second
        assert np.array_equal(np.sort(per_rank[0]), np.arange(n // 2))
        assert np.array_equal(np.sort(per_rank[1]), np.arange(n // 2, n))


def test_single_process_order_batches_and_transform(tmp_path):
    files, n = write_parts(tmp_path, [[3, 4], [5]])
    ds = ParquetStream(
        files, batch_size=5, columns=["id"], transform=lambda t: t.column("id").to_pylist()
    )
    batches = list(ds)
    assert batches == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11],
    ]  # batches span row groups and files
    assert ds.num_rows == n == 12
    shuffled = ParquetStream(files, batch_size=5, shuffle=True, shuffle_buffer=100, seed=1)
    rows = np.concatenate([b["id"] for b in shuffled])
    assert sorted(rows) == list(range(12)) and not np.array_equal(rows, np.arange(12))
    again = np.concatenate(
        [
            b["id"]
            for b in ParquetStream(files, batch_size=5, shuffle=True, shuffle_buffer=100, seed=1)
        ]
    )
    assert np.array_equal(rows, again)  # deterministic for a seed and epoch


def test_rank_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_rank() == (2, 3)
    assert resolve_rank(0, 2) == (0, 2)
    files, n = write_parts(tmp_path, [[30]])
    rows = np.concatenate([b["id"] for b in ParquetStream(files, batch_size=7)])  # env: rank 2 of 3
    assert rows.tolist() == list(range(20, 30))
    with pytest.raises(ValueError, match="rank < world_size"):
        resolve_rank(3, 3)
    with pytest.raises(ValueError, match="both rank and world_size"):
        ParquetStream(files, rank=1)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        ParquetStream([tmp_path / "nope.parquet"])
