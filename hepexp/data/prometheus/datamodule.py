"""data=prometheus: per-OM photon timing histograms of Prometheus events, streamed from Parquet.

Source events (simulated once into ``data_dir``, or real Prometheus Parquet files) are split by
event into train/val/test (contiguous ranges of the events in file order, fractions from
``splits``; ``splits: test`` puts every event into one split, e.g. to evaluate on a real file).
Each split is pre-processed once (:func:`~hepexp.data.prometheus.preprocess.preprocess_events`)
into sparse Parquet chunks of ``chunk_size`` OM records under ``data_dir/om_timing/<key>/``; the
key digests the source and every setting that changes the records, so a new setting makes a
new cache and an unchanged one is reused. Training streams the chunks
(:class:`~hepexp.data.streaming.ParquetStream`: row groups sharded by DDP rank, then DataLoader
worker; every OM exactly once per epoch, the last partial batch included), so the data need not
fit in memory.

Batches (view ``om_timing``) are dicts of tensors: the histograms in CSR form ``offsets`` (B+1),
``bin_index`` (nnz, int64) and ``bin_count`` (nnz, float32) -- or, with ``dense: true``, also
``counts`` (B, num_bins) float32 --, ``pos`` (B, 3) m, ``string_id``, ``sensor_id``,
``event_index`` (index of the event in the source files) and ``n_photons``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from hepexp.data.base import HEPDataModule
from hepexp.data.cache import ensure_generated
from hepexp.data.prometheus.io import PrometheusFormatError
from hepexp.data.prometheus.preprocess import preprocess_events
from hepexp.data.streaming import ParquetStream, resolve_rank
from hepexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_VERSION = 1
_ID_COLUMNS = ("string_id", "sensor_id", "event_index")


class OMTimingBatch:
    """Turns a Parquet slice of sparse OM records into a batch dict of tensors (picklable)."""

    def __init__(self, num_bins: int, dense: bool = False) -> None:
        self.num_bins = int(num_bins)
        self.dense = dense

    def __call__(self, table: pa.Table) -> dict[str, torch.Tensor]:
        index_col = table.column("bin_index").combine_chunks()
        count_col = table.column("bin_count").combine_chunks()
        offsets = np.asarray(index_col.offsets, dtype=np.int64)
        lo, hi = offsets[0], offsets[-1]
        index = np.asarray(index_col.values)[lo:hi].astype(np.int64)
        count = np.asarray(count_col.values)[lo:hi].astype(np.float32)
        out = {
            "offsets": torch.from_numpy(offsets - lo),
            "bin_index": torch.from_numpy(index),
            "bin_count": torch.from_numpy(count),
            "pos": torch.from_numpy(
                np.stack([table.column(c).to_numpy() for c in "xyz"], axis=1).astype(np.float32)
            ),
            "n_photons": torch.from_numpy(table.column("n_photons").to_numpy().astype(np.int64)),
        }
        for name in _ID_COLUMNS:
            out[name] = torch.from_numpy(table.column(name).to_numpy().astype(np.int64))
        if self.dense:
            out["counts"] = densify_batch(out, self.num_bins)
        return out


def densify_batch(batch: Mapping[str, torch.Tensor], num_bins: int) -> torch.Tensor:
    """Dense (B, num_bins) float32 counts of a sparse batch, on the batch's device."""
    offsets = batch["offsets"]
    n = len(offsets) - 1
    rows = torch.repeat_interleave(torch.arange(n, device=offsets.device), offsets.diff())
    counts = torch.zeros(n, num_bins, dtype=torch.float32, device=offsets.device)
    counts[rows, batch["bin_index"]] = batch["bin_count"].float()
    return counts


class OMStream(ParquetStream):
    """A ParquetStream that knows how many batches one DDP rank yields per epoch (summed over
    its ``num_workers`` DataLoader workers, each ending with its own partial batch), so that
    Lightning can size epochs, progress bars and per-step schedules."""

    def __init__(self, *args: Any, num_workers: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_workers = num_workers

    def __len__(self) -> int:
        rank, world = resolve_rank(self.rank, self.world_size)
        r0, r1 = self.shard_range(rank, world)
        n = max(self.num_workers, 1)
        bounds = [r0 + w * (r1 - r0) // n for w in range(n + 1)]
        return sum(
            -(-(b - a) // self.batch_size) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )


class _StreamLoader(DataLoader):
    """A DataLoader over a ParquetStream that sets the stream's epoch each time it is iterated
    (Lightning only sets the epoch of samplers), from the trainer when one is attached."""

    def __init__(self, stream: ParquetStream, epoch_of: Any = None, **kwargs: Any) -> None:
        super().__init__(stream, batch_size=None, **kwargs)
        self._epoch_of = epoch_of
        self._iterations = 0

    def __iter__(self):
        epoch = self._epoch_of() if self._epoch_of is not None else None
        self.dataset.set_epoch(self._iterations if epoch is None else epoch)
        self._iterations += 1
        return super().__iter__()


def source_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The event files of ``source``: a Parquet file, a directory of them, or a list of files."""
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("*.parquet"))
            if not files:
                raise DataError(path, None, "data.source directory holds no *.parquet files")
        else:
            files = [path]
    for f in files:
        if not f.is_file():
            raise DataError(
                f, None, "data.source is neither 'simulate' nor an existing Prometheus Parquet file"
            )
    return files


class PrometheusDataModule(HEPDataModule):
    """Per-OM timing histograms of Prometheus events (see the module docstring).

    Args:
        source: ``"simulate"`` (the built-in generator, written once into ``data_dir``), a
            Prometheus Parquet file, a directory of them, or a list of files.
        simulation: ``n_events``, ``seed`` and ``options`` (fields of
            :class:`~hepexp.data.prometheus.simulate.SimulationOptions`).
        splits: fractions of the events per split (``{train: 0.8, val: 0.1, test: 0.1}``), or
            one split name that gets every event.
        max_events: use only the first N source events.
        num_bins, max_time: histogram binning (ns); bin i covers [i w, (i + 1) w), w = max_time /
            num_bins, times relative to the event's first photon, later hits in the last bin.
        chunk_size, row_group_size: OM records per pre-processed Parquet file / row group (the
            row group is the streaming work unit).
        dense: also hand out dense ``counts`` (B, num_bins); models can densify on device instead.
        shuffle_buffer: training OMs mixed across row groups (0: only the row-group order).
    """

    views = {
        "om_timing": "one hit OM per sample: its photon arrival-time histogram (sparse CSR, "
        "optionally dense), position, string/sensor/event ids and photon count",
    }

    def __init__(
        self,
        view: str = "om_timing",
        source: str | Sequence[str] = "simulate",
        data_dir: str = "data/prometheus",
        simulation: Mapping[str, Any] | None = None,
        splits: Mapping[str, float] | str | None = None,
        max_events: int | None = None,
        num_bins: int = 6400,
        max_time: float = 6400.0,
        chunk_size: int = 250_000,
        row_group_size: int = 4096,
        dense: bool = False,
        shuffle_buffer: int = 16384,
        batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(view, batch_size, num_workers, pin_memory, seed)
        self.source = source
        self.data_dir = Path(data_dir)
        self.simulation = {"n_events": 300, "seed": 1, "options": {}}
        self.simulation.update(dict(simulation or {}))
        unknown = set(self.simulation) - {"n_events", "seed", "options"}
        if unknown:
            raise ConfigError(
                f"data.simulation: unknown keys {sorted(unknown)}; use n_events, seed, options"
            )
        self.splits = _parse_splits(splits)
        self.max_events = max_events
        if int(num_bins) != num_bins or num_bins < 1 or not max_time > 0:
            raise ConfigError(
                f"data.num_bins must be a positive integer and data.max_time > 0, got "
                f"{num_bins}, {max_time}"
            )
        self.num_bins = int(num_bins)
        self.max_time = float(max_time)
        if chunk_size < 1 or row_group_size < 1:
            raise ConfigError(
                f"data.chunk_size and data.row_group_size must be >= 1, got {chunk_size}, "
                f"{row_group_size}"
            )
        self.chunk_size = int(chunk_size)
        self.row_group_size = int(row_group_size)
        self.dense = bool(dense)
        self.shuffle_buffer = int(shuffle_buffer)

    @property
    def bin_width(self) -> float:
        return self.max_time / self.num_bins

    # -- source events -----------------------------------------------------------------------
    def event_files(self) -> list[Path]:
        """The source event files (simulating them first when ``source: simulate``)."""
        if self.source != "simulate":
            return source_files(self.source)
        from hepexp.data.prometheus.simulate import ensure_simulated

        sim = self.simulation
        key = _digest(sim)
        path = self.data_dir / "simulated" / key / "events.parquet"
        return [
            ensure_simulated(path, int(sim["n_events"]), int(sim["seed"]), **dict(sim["options"]))
        ]

    def _event_counts(self, files: Sequence[Path]) -> list[int]:
        counts = []
        for f in files:
            try:
                counts.append(pq.ParquetFile(f).metadata.num_rows)
            except (pa.ArrowInvalid, OSError) as err:
                raise PrometheusFormatError(
                    f, None, f"not a readable Parquet file ({err})"
                ) from err
        return counts

    def split_events(self, split: str) -> np.ndarray:
        """Global indices (over the source files in order) of the events of ``split``."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; use one of {SPLITS}")
        n = sum(self._event_counts(self.event_files()))
        if self.max_events is not None:
            n = min(n, int(self.max_events))
        total = sum(self.splits.values())
        bounds = np.cumsum([0.0] + [self.splits[s] / total for s in SPLITS])
        cuts = np.round(bounds * n).astype(np.int64)
        i = SPLITS.index(split)
        return np.arange(cuts[i], cuts[i + 1], dtype=np.int64)

    # -- pre-processed cache -----------------------------------------------------------------
    def _cache_settings(self, split: str) -> dict[str, Any]:
        files = self.event_files()
        if self.source == "simulate":
            origin: dict[str, Any] = {"simulation": self.simulation}
        else:
            origin = {
                "files": [
                    {
                        "path": str(f.resolve()),
                        "size": f.stat().st_size,
                        "mtime": f.stat().st_mtime_ns,
                    }
                    for f in files
                ]
            }
        return {
            "version": CACHE_VERSION,
            **origin,
            "splits": self.splits,
            "max_events": self.max_events,
            "split": split,
            "num_bins": self.num_bins,
            "max_time": self.max_time,
            "chunk_size": self.chunk_size,
            "row_group_size": self.row_group_size,
        }

    def split_dir(self, split: str) -> Path:
        """Directory of the pre-processed chunks of ``split``, built on first use."""
        settings = self._cache_settings(split)
        common = {k: v for k, v in settings.items() if k != "split"}
        directory = self.data_dir / "om_timing" / _digest(common) / split
        events = self.split_events(split)
        if len(events) == 0:
            raise ConfigError(
                f"the {split} split of data=prometheus has no events: give it a larger share in "
                f"data.splits (now {self.splits}) or more events"
            )
        files = self.event_files()

        def generate(tmp: Path) -> None:
            written = preprocess_events(
                files,
                tmp,
                num_bins=self.num_bins,
                max_time=self.max_time,
                chunk_size=self.chunk_size,
                row_group_size=self.row_group_size,
                events=events,
                progress=True,
            )
            if not written:
                raise DataError(
                    files[0], "photons", f"the {split} split's {len(events)} events have no photons"
                )

        return ensure_generated(
            directory, settings, generate, is_complete=lambda d: any(d.glob("part-*.parquet"))
        )

    def split_files(self, split: str) -> list[Path]:
        """The pre-processed Parquet chunks of ``split`` (last one possibly partial)."""
        return sorted(self.split_dir(split).glob("part-*.parquet"))

    def num_oms(self, split: str) -> int:
        """Number of OM records in ``split``."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.split_files(split))

    # -- Lightning hooks ---------------------------------------------------------------------
    def _active_splits(self) -> list[str]:
        return [s for s in SPLITS if self.splits[s] > 0]

    def prepare_data(self) -> None:
        for split in self._active_splits():
            self.split_dir(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = ("train", "val") if stage == "fit" else SPLITS if stage is None else ("test",)
        for split in wanted:
            if split in self.datasets or self.splits[split] == 0:
                continue
            self.datasets[split] = self.stream(split)

    def stream(
        self, split: str, shuffle: bool | None = None, batch_size: int | None = None
    ) -> OMStream:
        """A ParquetStream of ``split`` (training data shuffled unless told otherwise)."""
        rank = world = None
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            rank, world = trainer.global_rank, trainer.world_size
        shuffle = (split == "train") if shuffle is None else shuffle
        return OMStream(
            self.split_files(split),
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            shuffle_buffer=self.shuffle_buffer if shuffle else 0,
            seed=self.seed,
            rank=rank,
            world_size=world,
            transform=OMTimingBatch(self.num_bins, self.dense),
            num_workers=self.num_workers,
        )

    def loader(self, split: str, shuffle: bool | None = None, **kwargs: Any) -> DataLoader:
        """A DataLoader over ``split``; ``batch_size`` (OMs per batch) may be overridden."""
        stream = self.dataset(split)
        batch_size = kwargs.pop("batch_size", None)
        if shuffle is not None or batch_size is not None:
            stream = self.stream(split, shuffle=shuffle, batch_size=batch_size)
        trainer = getattr(self, "trainer", None)
        epoch_of = (lambda: trainer.current_epoch) if trainer is not None else None
        options = dict(num_workers=self.num_workers, pin_memory=self.pin_memory)
        options.update(kwargs)
        return _StreamLoader(stream, epoch_of=epoch_of, **options)


def _parse_splits(splits: Mapping[str, float] | str | None) -> dict[str, float]:
    if splits is None:
        return {"train": 0.8, "val": 0.1, "test": 0.1}
    if isinstance(splits, str):
        if splits not in SPLITS:
            raise ConfigError(
                f"data.splits must map {SPLITS} to fractions or name one split, got '{splits}'"
            )
        return {s: float(s == splits) for s in SPLITS}
    splits = {str(k): float(v) for k, v in dict(splits).items()}
    unknown = set(splits) - set(SPLITS)
    if unknown or any(v < 0 for v in splits.values()) or sum(splits.values()) <= 0:
        raise ConfigError(
            f"data.splits needs non-negative fractions for {SPLITS} (summing to > 0), got {splits}"
        )
    return {s: splits.get(s, 0.0) for s in SPLITS}


def _digest(settings: Mapping) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
