"""Streaming Parquet rows to a DataLoader, sharded over DDP ranks and DataLoader workers.

Work units are Parquet row groups. Each epoch the units are put in one order (shuffled with a
seed that depends on the epoch when ``shuffle``), identical on every rank and worker; the rows
of that sequence are split into contiguous ranges, first by DDP rank, then by DataLoader
worker. Every row is therefore seen exactly once per epoch across ranks x workers (the last
partial batch included), ranks get equally many rows (+-1), and a shard reads whole row groups
except at the (at most two) ends of its range; with fewer row groups than shards the split is
simply by rows. Balancing rows rather than dealing whole row groups round robin keeps the
batch counts of DDP ranks equal when row groups have uneven sizes (uneven counts make DDP hang).

Within a shard, rows can additionally be shuffled in a buffer of ``shuffle_buffer`` rows.
Batches of ``batch_size`` rows are handed to ``transform`` (default: a dict of numpy arrays);
use it with ``DataLoader(dataset, batch_size=None, num_workers=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["ParquetStream", "resolve_rank", "table_to_numpy"]


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """DDP rank and world size: explicit arguments, else torch.distributed when initialised,
    else the ``RANK`` / ``WORLD_SIZE`` environment variables, else (0, 1)."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    elif rank is None or world_size is None:
        raise ValueError(
            f"give both rank and world_size or neither, got rank={rank}, world_size={world_size}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """Default transform: flat columns as (writable) numpy arrays, list columns as object arrays."""
    return {name: np.array(table.column(name).to_numpy()) for name in table.schema.names}


class ParquetStream(IterableDataset):
    """Iterable dataset over the rows of Parquet files (see the module docstring).

    Args:
        files: Parquet files, read in this order (before any shuffling).
        batch_size: rows per yielded batch (the last batch of a shard may be smaller).
        columns: columns to read (None = all).
        shuffle: shuffle the row-group order (and rows within ``shuffle_buffer``) every epoch.
        shuffle_buffer: rows mixed together when ``shuffle`` (0 = only the unit order).
        seed: base seed; the epoch (:meth:`set_epoch`) is mixed in.
        rank, world_size: DDP position (default: :func:`resolve_rank` at iteration time).
        transform: maps each ``pyarrow.Table`` batch to what the loader yields.

    With ``persistent_workers=True`` the workers keep the epoch they were started with; call
    :meth:`set_epoch` before creating the iterator, or use non-persistent workers.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        batch_size: int = 1024,
        columns: Sequence[str] | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Callable[[pa.Table], Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("ParquetStream needs at least one file")
        self.batch_size = int(batch_size)
        self.columns = list(columns) if columns is not None else None
        self.shuffle, self.shuffle_buffer, self.seed = bool(shuffle), int(shuffle_buffer), int(seed)
        self.rank, self.world_size = rank, world_size
        if (rank is None) != (world_size is None):
            resolve_rank(rank, world_size)  # raises the explanatory error
        self.transform = transform or table_to_numpy
        self.epoch = 0
        units = []
        for i, f in enumerate(self.files):
            if not f.exists():
                raise FileNotFoundError(f"Parquet file not found: {f}")
            meta = pq.ParquetFile(f).metadata
            units += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self.units = np.array(units, dtype=np.int64).reshape(-1, 3)

    @property
    def num_rows(self) -> int:
        return int(self.units[:, 2].sum())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: changes the shuffled order (same on every rank and worker)."""
        self.epoch = int(epoch)

    def shard_range(self, shard: int, n_shards: int) -> tuple[int, int]:
        """Global row range [start, stop) of a shard in the epoch's unit sequence."""
        n = self.num_rows
        return shard * n // n_shards, (shard + 1) * n // n_shards

    def _unit_order(self) -> np.ndarray:
        if not self.shuffle:
            return self.units
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.units[rng.permutation(len(self.units))]

    def _shard(self) -> tuple[int, int, int, int]:
        """(start, stop) rows of this rank x worker, plus the shard id and count."""
        rank, world = resolve_rank(self.rank, self.world_size)
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        r0, r1 = self.shard_range(rank, world)  # rank first ...
        span = r1 - r0
        w0, w1 = (
            r0 + worker * span // n_workers,
            r0 + (worker + 1) * span // n_workers,
        )  # ... then worker
        return w0, w1, rank * n_workers + worker, world * n_workers

    def _slices(self, start: int, stop: int) -> Iterator[pa.Table]:
        """The rows [start, stop) of the epoch's unit sequence, one row-group slice at a time."""
        order = self._unit_order()
        ends = np.cumsum(order[:, 2])
        begins = ends - order[:, 2]
        handles: dict[int, pq.ParquetFile] = {}
        for k in np.flatnonzero((ends > start) & (begins < stop)):
            f, g, n = (int(v) for v in order[k])
            if f not in handles:
                handles[f] = pq.ParquetFile(self.files[f])
            table = handles[f].read_row_group(g, columns=self.columns)
            lo, hi = max(start - begins[k], 0), min(stop - begins[k], n)
            yield table.slice(lo, hi - lo)

    def __iter__(self) -> Iterator[Any]:
        start, stop, shard, _ = self._shard()
        rng = np.random.default_rng([self.seed, self.epoch, shard, 1])
        buffer: list[pa.Table] = []
        buffered = 0
        threshold = max(self.shuffle_buffer if self.shuffle else 0, self.batch_size)
        for piece in self._slices(start, stop):
            buffer.append(piece)
            buffered += len(piece)
            if buffered >= threshold:
                rest = yield from self._emit(buffer, rng, final=False)
                buffer, buffered = ([rest], len(rest)) if rest is not None else ([], 0)
        if buffered:
            yield from self._emit(buffer, rng, final=True)

    def _emit(self, buffer: list[pa.Table], rng: np.random.Generator, final: bool):
        """Yield full batches of the buffered rows (shuffled if asked); return the remainder."""
        table = pa.concat_tables(buffer) if len(buffer) > 1 else buffer[0]
        if self.shuffle and self.shuffle_buffer > 0:
            table = table.take(pa.array(rng.permutation(len(table))))
        n_full = len(table) // self.batch_size * self.batch_size
        for i in range(0, n_full, self.batch_size):
            yield self.transform(table.slice(i, self.batch_size))
        if n_full < len(table):
            if final:
                yield self.transform(table.slice(n_full))
                return None
            return table.slice(n_full)
        return None
