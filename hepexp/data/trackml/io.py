"""Read and write TrackML events in the official CSV format (Kaggle TrackML challenge).

An event is four files ``<prefix>-hits.csv``, ``-cells.csv``, ``-particles.csv`` and
``-truth.csv``, each optionally gzip-compressed (``.csv.gz``), e.g. ``event000000001-hits.csv``.

Columns and the dtypes returned (the TrackML challenge format):

========== ==============================================================================
hits       hit_id, x, y, z (mm), volume_id, layer_id, module_id
cells      hit_id, ch0, ch1, value
particles  particle_id, particle_type (PDG), vx, vy, vz (mm), px, py, pz (GeV), q, nhits
truth      hit_id, particle_id (0 = noise), tx, ty, tz (mm), tpx, tpy, tpz (GeV), weight
========== ==============================================================================

Integer columns are int64. ``particle_id`` is a 64-bit bit field and is parsed directly as an
integer, never through float (float64 would corrupt ids above 2**53); an unsigned id above
2**63 - 1 is kept as the int64 with the same bits. Float columns are float64 (the official
trackml-library uses float32, which drops the last digits printed in the files). Extra columns
in a file are ignored; a malformed file raises :class:`TrackMLFormatError`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hepexp.errors import DataError

PARTS = ("hits", "cells", "particles", "truth")

#: official columns per part: name -> "i" (int64) or "f" (float64)
COLUMNS: dict[str, dict[str, str]] = {
    "hits": {
        "hit_id": "i",
        "x": "f",
        "y": "f",
        "z": "f",
        "volume_id": "i",
        "layer_id": "i",
        "module_id": "i",
    },
    "cells": {"hit_id": "i", "ch0": "i", "ch1": "i", "value": "f"},
    "particles": {
        "particle_id": "i",
        "particle_type": "i",
        "vx": "f",
        "vy": "f",
        "vz": "f",
        "px": "f",
        "py": "f",
        "pz": "f",
        "q": "i",
        "nhits": "i",
    },
    "truth": {
        "hit_id": "i",
        "particle_id": "i",
        "tx": "f",
        "ty": "f",
        "tz": "f",
        "tpx": "f",
        "tpy": "f",
        "tpz": "f",
        "weight": "f",
    },
}

_EVENT_FILE = re.compile(r"^event(\d+)-(hits|cells|particles|truth)\.csv(\.gz)?$")
_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


class TrackMLFormatError(DataError):
    """A malformed TrackML file: names the file, the column and what was expected."""

    @property
    def column(self) -> str | None:
        return self.field


# ---------------------------------------------------------------------------------------------
# reading


def part_path(prefix: str | os.PathLike, part: str) -> Path:
    """The file of one part of an event: ``<prefix>-<part>.csv`` or ``.csv.gz``.

    Raises:
        ValueError: unknown part, or both the plain and the compressed file exist.
        FileNotFoundError: neither exists.
    """
    if part not in COLUMNS:
        raise ValueError(f"unknown TrackML part {part!r}; expected one of {PARTS}")
    plain = Path(f"{os.fspath(prefix)}-{part}.csv")
    gz = plain.with_name(plain.name + ".gz")
    if plain.exists() and gz.exists():
        raise ValueError(f"{plain} and {gz} both exist; keep one of them")
    if plain.exists():
        return plain
    if gz.exists():
        return gz
    raise FileNotFoundError(f"{plain}[.gz]: no such TrackML {part} file")


def _diagnose(path: Path, part: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Slow path: parse the columns from text, raising a precise error on the first bad value.

    Also converts unsigned 64-bit integers above the int64 range (kept as the same bits).
    """
    text = pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False)
    out = {}
    for column in columns:
        raw = text[column].astype(object).to_numpy()
        kind = COLUMNS[part][column]
        if kind == "i":
            ok = np.array([bool(_INTEGER_TEXT.match(v)) for v in raw], dtype=bool)
            if not ok.all():
                row = int(np.flatnonzero(~ok)[0])
                empty = raw[row].strip().lower() in ("", "nan")
                what = "a missing value (NaN)" if empty else repr(raw[row])
                raise TrackMLFormatError(
                    path, column, f"expected an integer, got {what} in data row {row + 1}"
                )
            ints = [int(v) for v in raw]
            if any(v < -(2**63) or v >= 2**64 for v in ints):
                raise TrackMLFormatError(path, column, "integer outside the 64-bit range")
            out[column] = np.array([v % 2**64 for v in ints], dtype=np.uint64).view(np.int64)
        else:
            values = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(np.float64)
            bad = np.isnan(values)  # non-numeric text, an empty field or a literal NaN
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise TrackMLFormatError(
                    path, column, f"expected a number, got {raw[row]!r} in data row {row + 1}"
                )
            out[column] = values
    return out


def read_part(path: str | os.PathLike, part: str) -> pd.DataFrame:
    """Read one TrackML file (``hits``, ``cells``, ``particles`` or ``truth``) and validate it.

    Returns the official columns in order (int64 / float64). Raises
    :class:`TrackMLFormatError` on a missing column, a non-numeric or missing value, a
    non-integer id, or duplicated ids (``hit_id`` in hits/truth, ``particle_id`` in particles).
    """
    path = Path(path)
    spec = COLUMNS[part]
    columns = list(spec)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise TrackMLFormatError(path, None, f"empty file; expected columns {columns}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise TrackMLFormatError(
            path, missing[0], f"missing column(s) {missing}; a {part} file has {columns}"
        )
    dtypes = {c: (np.int64 if k == "i" else np.float64) for c, k in spec.items()}
    try:
        frame = pd.read_csv(path, usecols=columns, dtype=dtypes)
        values = {c: frame[c].to_numpy() for c in columns}
        for c in columns:
            if spec[c] == "f" and np.isnan(values[c]).any():
                raise ValueError(c)  # a missing float: let the slow path name the row
    except (ValueError, OverflowError):
        values = _diagnose(path, part, columns)
    frame = pd.DataFrame({c: values[c] for c in columns})
    unique_key = {"hits": "hit_id", "truth": "hit_id", "particles": "particle_id"}.get(part)
    if unique_key is not None and not frame[unique_key].is_unique:
        dup = frame[unique_key][frame[unique_key].duplicated()].iloc[0]
        raise TrackMLFormatError(path, unique_key, f"expected unique ids, {dup} is repeated")
    return frame


def _check_hit_ids(frames: dict[str, pd.DataFrame], paths: dict[str, Path]) -> None:
    """Every hit_id of truth and cells must be a hit of the hits file."""
    if "hits" not in frames:
        return
    known = pd.Index(frames["hits"]["hit_id"])
    for part in ("truth", "cells"):
        if part in frames:
            ids = frames[part]["hit_id"].to_numpy()
            absent = known.get_indexer(ids) < 0
            if absent.any():
                raise TrackMLFormatError(
                    paths[part],
                    "hit_id",
                    f"{int(absent.sum())} hit ids are not in {paths['hits'].name}, "
                    f"e.g. {int(ids[absent][0])}; expected ids of the event's hits",
                )


def load_event(prefix: str | os.PathLike, parts: Sequence[str] = PARTS) -> tuple[pd.DataFrame, ...]:
    """Load one event, returning one DataFrame per entry of ``parts``, in that order.

    Args:
        prefix: path without the part suffix, e.g. ``data/event000000001``.
        parts: any of ``"hits"``, ``"cells"``, ``"particles"``, ``"truth"``.

    Raises:
        FileNotFoundError: a requested file is absent.
        TrackMLFormatError: a malformed file (see :func:`read_part`), or truth/cells hit ids
            that are not in hits (checked when hits are loaded too).
    """
    parts = iter_parts((parts,) if isinstance(parts, str) else parts)
    paths = {part: part_path(prefix, part) for part in parts}
    frames = {part: read_part(path, part) for part, path in paths.items()}
    _check_hit_ids(frames, paths)
    return tuple(frames[part] for part in parts)


def list_events(path: str | os.PathLike, parts: Sequence[str] = PARTS) -> list[int]:
    """Sorted ids of the events in a directory that have a file of any of ``parts``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory of TrackML events")
    ids = set()
    for entry in os.scandir(path):
        match = _EVENT_FILE.match(entry.name)
        if match and match.group(2) in parts:
            ids.add(int(match.group(1)))
    return sorted(ids)


def event_prefix(path: str | os.PathLike, event_id: int) -> Path:
    """``<path>/event<9-digit id>``, the official file-name prefix."""
    return Path(path) / f"event{event_id:09d}"


def load_dataset(
    path: str | os.PathLike,
    nevents: int | None = None,
    skip: int = 0,
    parts: Sequence[str] = PARTS,
) -> Iterator[tuple]:
    """Lazily iterate over the events of a directory, sorted by event id.

    Yields ``(event_id, frame, ...)`` with one frame per entry of ``parts``. The directory is
    listed immediately (errors are raised by this call); files are read one event at a time.

    Raises:
        FileNotFoundError: ``path`` is not a directory or holds no events.
    """
    parts = iter_parts((parts,) if isinstance(parts, str) else parts)
    if skip < 0 or (nevents is not None and nevents < 0):
        raise ValueError(f"skip and nevents must be >= 0, got skip={skip}, nevents={nevents}")
    ids = list_events(path, parts)
    if not ids:
        raise FileNotFoundError(
            f"{path}: no TrackML events (files named eventNNNNNNNNN-<part>.csv[.gz] "
            f"for parts {tuple(parts)})"
        )
    ids = ids[skip:] if nevents is None else ids[skip : skip + nevents]

    def generate() -> Iterator[tuple]:
        for event_id in ids:
            yield (event_id, *load_event(event_prefix(path, event_id), parts))

    return generate()


# ---------------------------------------------------------------------------------------------
# writing


def _prepare(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    """Select the official columns in order with their dtypes; raise on missing columns."""
    spec = COLUMNS[part]
    missing = [c for c in spec if c not in frame.columns]
    if missing:
        raise ValueError(f"{part}: missing column(s) {missing}; expected {list(spec)}")
    out = {}
    for column, kind in spec.items():
        values = frame[column].to_numpy()
        if kind == "i":
            if values.dtype.kind not in "iu":
                raise ValueError(
                    f"{part}.{column}: expected an integer dtype, got {values.dtype} "
                    "(ids must never pass through float)"
                )
            out[column] = values.astype(np.int64, copy=False)
        else:
            out[column] = values.astype(np.float64, copy=False)
    return pd.DataFrame(out)


def write_atomic_csv(
    frame: pd.DataFrame, path: Path, compress: bool, float_format: str | None
) -> None:
    """Write ``frame`` as CSV to a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        compression = {"method": "gzip", "mtime": 0} if compress else None
        frame.to_csv(tmp, index=False, float_format=float_format, compression=compression)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_event(
    prefix: str | os.PathLike,
    hits: pd.DataFrame | None = None,
    cells: pd.DataFrame | None = None,
    particles: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    compress: bool = False,
    float_format: str | None = "%.10g",
) -> list[Path]:
    """Write the given parts of an event as ``<prefix>-<part>.csv`` (``.csv.gz`` if
    ``compress``), each atomically (temporary file + ``os.replace``).

    The official columns are written in order (extra columns are dropped); ids must be
    integers. Floats are written with ``float_format`` (10 significant digits by default;
    ``None`` writes the shortest exact representation). A stale file of the other variant
    (``.csv`` vs ``.csv.gz``) is removed so that :func:`load_event` reads the new one.
    Returns the paths written.
    """
    frames = {"hits": hits, "cells": cells, "particles": particles, "truth": truth}
    prepared = {p: _prepare(f, p) for p, f in frames.items() if f is not None}
    written = []
    for part, frame in prepared.items():
        plain = Path(f"{os.fspath(prefix)}-{part}.csv")
        gz = plain.with_name(plain.name + ".gz")
        path, other = (gz, plain) if compress else (plain, gz)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_csv(frame, path, compress, float_format)
        other.unlink(missing_ok=True)
        written.append(path)
    return written


def iter_parts(parts: Iterable[str]) -> tuple[str, ...]:
    """Validate a list of part names."""
    parts = tuple(parts)
    unknown = [p for p in parts if p not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown TrackML part(s) {unknown}; expected some of {PARTS}")
    return parts
