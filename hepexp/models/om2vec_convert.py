"""om2vec conversion: Prometheus Parquet in, the same events out with a ``latents`` column.

``python convert.py ckpt_path=<om2vec ckpt> input=<file or directory> output=<directory>
[+options.chunk_size=5000] [+options.few_oms=keep|skip] [+options.min_oms=8]
[+options.batch_size=4096] [+options.device=auto|cpu|cuda] [+options.num_bins=...]
[+options.max_time=...]``

Every input event is written unchanged (``mc_truth``, ``photons``, the run config in the schema
metadata) plus ``latents``: one row per hit OM, ``[string_id, sensor_id, mu_1, ..., mu_L]``
(float64; L + 2 values; the posterior means), OMs ordered by string then sensor. The timing
histograms are built exactly as in training (the checkpoint's ``num_bins`` and ``max_time``).

Options:

* ``chunk_size``: events per output file (default 5000, as the original). Input ``<stem>``
  becomes ``<output>/<stem>-00000.parquet, <stem>-00001.parquet, ...``; each file is written to
  a temporary file and renamed when complete; stale higher-numbered files of an earlier run
  are removed.
* ``few_oms`` and ``min_oms``: what to do with events with fewer than ``min_oms`` hit OMs
  (default 8): ``keep`` (default) writes them like any other event (their ``latents`` may be
  short or empty); ``skip`` leaves them out of the output. (The original om2vec silently
  skipped events with fewer than 8 hit OMs.)
* ``batch_size``: OMs per forward pass (memory only; the latents do not depend on it).
* ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
* ``num_bins``, ``max_time``: accepted only when equal to the checkpoint's (a model cannot
  encode histograms binned differently from its training data); anything else is an error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from hepexp.data.prometheus.io import iter_events
from hepexp.data.prometheus.preprocess import om_histograms
from hepexp.errors import ConfigError, DataError

if TYPE_CHECKING:
    from hepexp.data.prometheus.datamodule import PrometheusDataModule
    from hepexp.models.om2vec import Om2Vec

FEW_OMS = ("keep", "skip")
#: list<list<float64>> without nulls, as awkward reads ``var * var * float64``
LATENTS_TYPE = pa.large_list(
    pa.field("item", pa.large_list(pa.field("item", pa.float64(), nullable=False)), nullable=False)
)
#: events read (and encoded) at a time; bounds memory independently of chunk_size
READ_EVENTS = 256


def _input_files(input_path: Path) -> list[Path]:
    if input_path.is_dir():
        files = sorted(input_path.glob("*.parquet"))
        if not files:
            raise DataError(input_path, None, "input directory holds no *.parquet files")
        return files
    if not input_path.is_file():
        raise DataError(
            input_path, None, "input is neither a Prometheus Parquet file nor a directory"
        )
    return [input_path]


class _ChunkWriter:
    """Events into ``<out_dir>/<stem>-NNNNN.parquet`` files of ``chunk_size`` rows, atomically."""

    def __init__(self, out_dir: Path, stem: str, schema: pa.Schema, chunk_size: int) -> None:
        self.out_dir, self.stem, self.schema, self.chunk_size = out_dir, stem, schema, chunk_size
        self.paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        start = 0
        while start < len(table):
            if self._writer is None:
                fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{self.stem}-", suffix=".tmp")
                os.close(fd)
                self._tmp = Path(tmp)
                self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="snappy")
                self._rows = 0
            n = min(len(table) - start, self.chunk_size - self._rows)
            self._writer.write_table(table.slice(start, n))
            self._rows += n
            start += n
            if self._rows >= self.chunk_size:
                self._close()

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        path = self.out_dir / f"{self.stem}-{len(self.paths):05d}.parquet"
        os.replace(self._tmp, path)
        self.paths.append(path)
        self._writer = None

    def finish(self) -> list[Path]:
        self._close()
        for stale in self.out_dir.glob(f"{self.stem}-[0-9][0-9][0-9][0-9][0-9].parquet"):
            if stale not in self.paths:
                stale.unlink()
        return self.paths

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None


def _latents_column(rows: np.ndarray, oms_per_event: np.ndarray) -> pa.Array:
    """list<list<float64>>: per event, per OM, ``rows`` values (OMs in event order)."""
    n_om, width = rows.shape
    inner = pa.LargeListArray.from_arrays(
        pa.array(np.arange(n_om + 1, dtype=np.int64) * width),
        pa.array(rows.reshape(-1)),
        type=LATENTS_TYPE.value_type,
    )
    outer = np.zeros(len(oms_per_event) + 1, dtype=np.int64)
    np.cumsum(oms_per_event, out=outer[1:])
    return pa.LargeListArray.from_arrays(pa.array(outer), inner, type=LATENTS_TYPE)


@torch.no_grad()
def convert_latents(
    model: Om2Vec,
    datamodule: PrometheusDataModule | None,
    input_path: Path,
    output_path: Path,
    chunk_size: int = 5000,
    few_oms: str = "keep",
    min_oms: int = 8,
    batch_size: int = 4096,
    device: str = "auto",
    num_bins: int | None = None,
    max_time: float | None = None,
) -> dict[str, Any]:
    """Write every input event with its OM latents (see the module docstring); returns counts."""
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ConfigError(f"options.chunk_size must be a positive integer, got {chunk_size}")
    if few_oms not in FEW_OMS:
        raise ConfigError(f"options.few_oms must be one of {FEW_OMS}, got '{few_oms}'")
    if int(min_oms) != min_oms or min_oms < 0:
        raise ConfigError(f"options.min_oms must be a non-negative integer, got {min_oms}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"options.batch_size must be a positive integer, got {batch_size}")
    for name, given, trained in (
        ("num_bins", num_bins, model.num_bins),
        ("max_time", max_time, model.max_time),
    ):
        if given is not None and float(given) != float(trained):
            raise ConfigError(
                f"options.{name}={given}, but the model was trained with {name}={trained}; "
                "histograms must be binned as in training (retrain for another binning)"
            )
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"options.device must be auto, cpu or cuda, got '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("options.device=cuda, but no CUDA device is available")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu")
    )
    input_path, output_path = Path(input_path), Path(output_path)
    files = _input_files(input_path)
    if output_path.exists() and not output_path.is_dir():
        raise ConfigError(
            f"output must be a directory (it receives one file per chunk): {output_path}"
        )
    if output_path.resolve() in {f.parent.resolve() for f in files}:
        raise ConfigError(f"output directory {output_path} must differ from the input directory")
    output_path.mkdir(parents=True, exist_ok=True)
    model.to(dev).eval()
    stats = {"files_in": len(files), "events_in": 0, "events_out": 0, "events_skipped": 0, "oms": 0}
    written: list[Path] = []
    for path in files:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow.append(pa.field("latents", LATENTS_TYPE, nullable=False))
        writer = _ChunkWriter(output_path, path.stem, schema, int(chunk_size))
        try:
            raws = pf.iter_batches(batch_size=READ_EVENTS)
            events = iter_events(path, batch_size=READ_EVENTS, columns=["photons"])
            bar = tqdm(total=pf.metadata.num_rows, desc=f"latents {path.name}", unit="ev")
            for raw, ev in zip(raws, events, strict=True):
                h = om_histograms(ev.photons, model.num_bins, model.max_time)
                mu = model.encode_histograms(h, int(batch_size))
                rows = np.concatenate(
                    [h["string_id"][:, None], h["sensor_id"][:, None], mu], axis=1
                ).astype(np.float64)
                per_event = np.bincount(h["event_index"], minlength=len(ev))
                table = pa.Table.from_batches([raw]).append_column(
                    schema.field("latents"), _latents_column(rows, per_event)
                )
                stats["events_in"] += len(ev)
                if few_oms == "skip":
                    keep = per_event >= min_oms
                    stats["events_skipped"] += int((~keep).sum())
                    table = table.filter(pa.array(keep))
                    stats["oms"] += int(per_event[keep].sum())
                else:
                    stats["oms"] += int(per_event.sum())
                stats["events_out"] += len(table)
                writer.write(table.cast(schema))
                bar.update(len(ev))
            bar.close()
            written += writer.finish()
        except BaseException:
            writer.abort()
            raise
    stats["files_out"] = len(written)
    stats["outputs"] = [str(p) for p in written]
    return stats
