"""Read and write Prometheus event Parquet files and `.geo` detector geometries.

A Prometheus file holds one row per event with two record columns:

* ``mc_truth``: the injected neutrino (``initial_state_*``: energy GeV, PDG type, zenith and
  azimuth rad, vertex x, y, z m), the interaction (1 = CC, 2 = NC), the final-state particles as
  lists (``final_state_*``, PDG codes stored as float64, hadrons = -2000001006), Bjorken x and y
  and the column depth (g/cm^2).
* ``photons``: one list entry per detected photon: the hit module's position
  (``sensor_pos_x/y/z`` m), ``string_id`` and ``sensor_id`` (1-based), the arrival time ``t``
  (ns after the interaction) and ``id_idx`` (1-based index of the final-state particle whose
  light it is).

The run configuration sits as JSON under the schema metadata key ``config_prometheus``.
:func:`write_events` reproduces the schema of the real files exactly (types, nesting, nullability,
field metadata), so files it writes are indistinguishable in layout from Prometheus output.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hepexp.errors import DataError

__all__ = [
    "CONFIG_KEY",
    "MC_TRUTH_FIELDS",
    "PHOTON_FIELDS",
    "EVENT_SCHEMA",
    "PrometheusFormatError",
    "EventWriter",
    "read_events",
    "read_config",
    "iter_events",
    "write_events",
    "read_geometry",
    "write_geometry",
]

CONFIG_KEY = b"config_prometheus"

# (name, is_list, numpy dtype) in the order of the real files.
MC_TRUTH_FIELDS: tuple[tuple[str, bool, str], ...] = (
    ("interaction", False, "int64"),
    ("initial_state_energy", False, "float64"),
    ("initial_state_type", False, "int64"),
    ("initial_state_zenith", False, "float64"),
    ("initial_state_azimuth", False, "float64"),
    ("initial_state_x", False, "float64"),
    ("initial_state_y", False, "float64"),
    ("initial_state_z", False, "float64"),
    ("final_state_energy", True, "float64"),
    ("final_state_type", True, "float64"),
    ("final_state_zenith", True, "float64"),
    ("final_state_azimuth", True, "float64"),
    ("final_state_x", True, "float64"),
    ("final_state_y", True, "float64"),
    ("final_state_z", True, "float64"),
    ("final_state_parent", True, "float64"),
    ("bjorken_x", False, "float64"),
    ("bjorken_y", False, "float64"),
    ("column_depth", False, "float64"),
)
PHOTON_FIELDS: tuple[tuple[str, bool, str], ...] = (
    ("sensor_pos_x", True, "float64"),
    ("sensor_pos_y", True, "float64"),
    ("sensor_pos_z", True, "float64"),
    ("string_id", True, "int64"),
    ("sensor_id", True, "int64"),
    ("t", True, "float64"),
    ("id_idx", True, "int64"),
)
_GROUPS = {"mc_truth": MC_TRUTH_FIELDS, "photons": PHOTON_FIELDS}
# Photon fields every reader needs; mc_truth fields and id_idx are checked when present.
_REQUIRED_PHOTON_FIELDS = (
    "sensor_pos_x",
    "sensor_pos_y",
    "sensor_pos_z",
    "string_id",
    "sensor_id",
    "t",
)


class PrometheusFormatError(DataError):
    """A file does not follow the Prometheus event (or `.geo`) format."""


# --------------------------------------------------------------------------------------------
# Schema (identical to the one awkward wrote into the real Prometheus files)
# --------------------------------------------------------------------------------------------


def _awkward_meta(node_type: str, record_is_tuple: str) -> dict[bytes, bytes]:
    text = (
        f'{{"mask_type": null, "node_type": "{node_type}", "mask_parameters": null, '
        f'"node_parameters": {{}}, "record_is_tuple": {record_is_tuple}, "record_is_scalar": false}}'
    )
    return {b"ARROW:extension:metadata": text.encode(), b"ARROW:extension:name": b"awkward"}


_LEAF_META = _awkward_meta("NumpyArray", "null")
_LIST_META = _awkward_meta("ListOffsetArray", "null")
_RECORD_META = _awkward_meta("RecordArray", "false")
_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64()}


def _leaf_field(name: str, is_list: bool, dtype: str) -> pa.Field:
    if not is_list:
        return pa.field(name, _ARROW_TYPES[dtype], nullable=False, metadata=_LEAF_META)
    item = pa.field("item", _ARROW_TYPES[dtype], nullable=False, metadata=_LEAF_META)
    return pa.field(name, pa.large_list(item), nullable=False, metadata=_LIST_META)


def _group_field(name: str, fields: Sequence[tuple[str, bool, str]]) -> pa.Field:
    children = [_leaf_field(*spec) for spec in fields]
    return pa.field(name, pa.struct(children), nullable=False, metadata=_RECORD_META)


EVENT_SCHEMA: pa.Schema = pa.schema(
    [_group_field("mc_truth", MC_TRUTH_FIELDS), _group_field("photons", PHOTON_FIELDS)]
)


def _plain_type(t: pa.DataType) -> pa.DataType:
    """Strip extension wrappers (awkward registers one) down to plain Arrow storage types."""
    if isinstance(t, pa.ExtensionType):
        return _plain_type(t.storage_type)
    if pa.types.is_struct(t):
        return pa.struct(
            [
                pa.field(f.name, _plain_type(f.type), f.nullable)
                for f in (t.field(i) for i in range(t.num_fields))
            ]
        )
    if pa.types.is_large_list(t):
        return pa.large_list(_plain_type(t.value_type))
    if pa.types.is_list(t):
        return pa.list_(_plain_type(t.value_type))
    return t


def _describe(is_list: bool, dtype: str) -> str:
    base = {"int64": "integer", "float64": "floating point"}[dtype]
    return f"list of {base}" if is_list else base


def _leaf_matches(t: pa.DataType, is_list: bool, dtype: str) -> bool:
    if is_list:
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            return False
        t = t.value_type
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        return False
    if dtype == "int64":
        return pa.types.is_integer(t)
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _check_schema(path: Path, schema: pa.Schema, groups: Iterable[str]) -> set[str]:
    """Raise :class:`PrometheusFormatError` naming file and field for missing/mistyped fields.

    Returns the ``group.field`` names stored with a non-canonical width (e.g. int32), to be cast.
    """
    to_cast: set[str] = set()
    for group in groups:
        if group not in schema.names:
            raise PrometheusFormatError(
                path,
                None,
                f"missing column '{group}' (Prometheus files have 'mc_truth' and 'photons'; "
                f"found {schema.names})",
            )
        gtype = _plain_type(schema.field(group).type)
        if not pa.types.is_struct(gtype):
            raise PrometheusFormatError(
                path, None, f"column '{group}' has type {gtype}, expected a struct (record)"
            )
        present = {gtype.field(i).name: gtype.field(i).type for i in range(gtype.num_fields)}
        required = _REQUIRED_PHOTON_FIELDS if group == "photons" else ()
        for name, is_list, dtype in _GROUPS[group]:
            if name not in present:
                if name in required:
                    raise PrometheusFormatError(
                        path,
                        None,
                        f"missing field '{group}.{name}' (expected {_describe(is_list, dtype)})",
                    )
                continue
            if not _leaf_matches(present[name], is_list, dtype):
                raise PrometheusFormatError(
                    path,
                    None,
                    f"field '{group}.{name}' has type {present[name]}, "
                    f"expected {_describe(is_list, dtype)}",
                )
            leaf = present[name].value_type if is_list else present[name]
            if leaf != _ARROW_TYPES[dtype]:
                to_cast.add(f"{group}.{name}")
    return to_cast


def _open(path: str | os.PathLike) -> tuple[Path, pq.ParquetFile]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Prometheus event file not found: {path}")
    try:
        return path, pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise PrometheusFormatError(path, None, f"not a readable Parquet file ({err})") from err


def _split_columns(
    path: Path, columns: Sequence[str] | None
) -> tuple[list[str], dict[str, list[str]]]:
    """Top-level groups to read and, per group, the sub-fields to keep ([] = all)."""
    if columns is None:
        return ["mc_truth", "photons"], {}
    groups: list[str] = []
    keep: dict[str, list[str]] = {}
    for col in columns:
        group, _, sub = col.partition(".")
        if group not in _GROUPS:
            raise PrometheusFormatError(
                path,
                None,
                f"unknown column '{col}' (expected 'mc_truth', 'photons' or 'group.field')",
            )
        if group not in groups:
            groups.append(group)
        if sub:
            keep.setdefault(group, []).append(sub)
        else:
            keep[group] = []  # whole group wins over a sub-selection
    return groups, {g: f for g, f in keep.items() if f}


def _to_awkward(
    path: Path, table: pa.Table | pa.RecordBatch, keep: dict[str, list[str]], to_cast: set[str]
) -> ak.Array:
    events = ak.from_arrow(table)
    out = {}
    for group in events.fields:
        rec = events[group]
        wanted = keep.get(group, rec.fields)
        missing = [f for f in wanted if f not in rec.fields]
        if missing:
            raise PrometheusFormatError(path, None, f"missing field '{group}.{missing[0]}'")
        cols = {}
        for name in wanted:
            col = rec[name]
            if "?" in str(col.type) or "option" in str(
                col.type
            ):  # nullable writer: no nulls allowed
                n_null = int(ak.sum(ak.is_none(col, axis=0)))
                if col.ndim > 1:
                    n_null += int(ak.sum(ak.is_none(col, axis=1)))
                if n_null:
                    raise PrometheusFormatError(
                        path, None, f"field '{group}.{name}' has {n_null} null values"
                    )
                col = ak.fill_none(col, 0, axis=None)
            if f"{group}.{name}" in to_cast:  # normalise int32/float32 variants
                dtype = next(s[2] for s in _GROUPS[group] if s[0] == name)
                col = ak.values_astype(col, np.dtype(dtype))
            cols[name] = col
        out[group] = ak.zip(cols, depth_limit=1)
    return ak.zip(out, depth_limit=1)


def read_events(path: str | os.PathLike, columns: Sequence[str] | None = None) -> ak.Array:
    """Read a Prometheus Parquet file into an awkward array of events.

    ``columns`` selects top-level groups (``"photons"``) or sub-fields (``"photons.t"``); the
    selection inside a group is applied after reading the group (pyarrow refuses to prune inside
    the awkward extension structs of the real files).
    """
    path, pf = _open(path)
    groups, keep = _split_columns(path, columns)
    to_cast = _check_schema(path, pf.schema_arrow, groups)
    return _to_awkward(path, pf.read(columns=groups), keep, to_cast)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Return the run configuration stored as JSON in the schema metadata."""
    path, pf = _open(path)
    meta = pf.schema_arrow.metadata or {}
    if CONFIG_KEY not in meta:
        raise PrometheusFormatError(
            path,
            None,
            f"no run configuration (schema metadata key '{CONFIG_KEY.decode()}' is missing)",
        )
    try:
        return json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as err:
        raise PrometheusFormatError(
            path, None, f"schema metadata '{CONFIG_KEY.decode()}' is not valid JSON ({err})"
        ) from err


def iter_events(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    batch_size: int = 1000,
    columns: Sequence[str] | None = None,
) -> Iterator[ak.Array]:
    """Stream events from one or more files in batches of at most ``batch_size`` events.

    Reads one row group at a time, so memory stays bounded by the row-group size; batches do
    not span files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for p in paths:
        path, pf = _open(p)
        groups, keep = _split_columns(path, columns)
        to_cast = _check_schema(path, pf.schema_arrow, groups)
        for batch in pf.iter_batches(batch_size=batch_size, columns=groups):
            yield _to_awkward(path, batch, keep, to_cast)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _leaf_array(
    path: Path, group: str, rec: ak.Array, name: str, is_list: bool, dtype: str
) -> pa.Array:
    if name not in rec.fields:
        raise PrometheusFormatError(path, None, f"cannot write, events lack field '{group}.{name}'")
    col = rec[name]
    try:
        if not is_list:
            values = np.asarray(ak.to_numpy(col), dtype=dtype)
            if values.ndim != 1:
                raise ValueError("not one value per event")
            return pa.array(values, type=_ARROW_TYPES[dtype])
        counts = np.asarray(ak.num(col, axis=1), dtype=np.int64)
        values = np.asarray(ak.to_numpy(ak.flatten(col, axis=1)), dtype=dtype)
    except (ValueError, TypeError, np.exceptions.AxisError) as err:
        kind = _describe(is_list, dtype)
        raise PrometheusFormatError(
            path, None, f"cannot write field '{group}.{name}' as {kind} ({err})"
        ) from err
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    list_type = EVENT_SCHEMA.field(group).type.field(name).type
    return pa.LargeListArray.from_arrays(
        pa.array(offsets), pa.array(values, type=_ARROW_TYPES[dtype]), type=list_type
    )


def _events_to_table(path: Path, events: ak.Array, schema: pa.Schema) -> pa.Table:
    groups = []
    for group, fields in _GROUPS.items():
        if group not in events.fields:
            raise PrometheusFormatError(path, None, f"cannot write, events lack field '{group}'")
        rec = events[group]
        arrays = [_leaf_array(path, group, rec, *spec) for spec in fields]
        groups.append(pa.StructArray.from_arrays(arrays, fields=list(schema.field(group).type)))
    return pa.Table.from_arrays(groups, schema=schema)


class EventWriter:
    """Append events to a Prometheus Parquet file, one row group per :meth:`write` call.

    The file appears atomically at ``path`` on :meth:`close` (temp file + ``os.replace``); on an
    exception inside a ``with`` block the temp file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {CONFIG_KEY: json.dumps(config if config is not None else {}).encode()}
        self.schema = EVENT_SCHEMA.with_metadata(meta)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="snappy")
        self.num_rows = 0

    def write(self, events: ak.Array) -> None:
        """Write ``events`` (fields ``mc_truth`` and ``photons``) as one row group."""
        table = _events_to_table(self.path, events, self.schema)
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.num_rows += len(table)

    def close(self) -> Path:
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_events(
    path: str | os.PathLike,
    events: ak.Array,
    config: dict[str, Any] | None = None,
    row_group_size: int | None = None,
) -> Path:
    """Write events atomically in the exact schema of real Prometheus files.

    ``config`` is stored as JSON under the schema metadata key ``config_prometheus``.
    """
    n = len(events)
    step = row_group_size or max(n, 1)
    with EventWriter(path, config) as writer:
        for start in range(0, max(n, 1), step):
            writer.write(events[start : start + step])
    return Path(path)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------

_MODULES_HEADER = "### Modules ###"


def read_geometry(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Prometheus ``.geo`` file: header lines, then ``x y z string om`` rows (m).

    Returns a DataFrame with columns x, y, z (float64, m), string_id, sensor_id (int64);
    ``df.attrs`` holds the header entries (e.g. ``medium``, ``dom_radius_cm``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"geometry file not found: {path}")
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == _MODULES_HEADER)
    except StopIteration:
        raise PrometheusFormatError(
            path, None, f"no '{_MODULES_HEADER}' line; not a .geo file"
        ) from None
    attrs: dict[str, Any] = {}
    for line in lines[:start]:
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            name = key.strip().lower()
            attrs["dom_radius_cm" if name.startswith("dom radius") else name] = value.strip()
    if "dom_radius_cm" in attrs:
        attrs["dom_radius_cm"] = float(attrs["dom_radius_cm"])
    rows = []
    for lineno, line in enumerate(lines[start + 1 :], start=start + 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise PrometheusFormatError(
                f"{path}:{lineno}", None, f"expected 5 columns 'x y z string om', got {len(parts)}"
            )
        rows.append(parts)
    if not rows:
        raise PrometheusFormatError(path, None, f"no modules listed after '{_MODULES_HEADER}'")
    raw = np.array(rows)
    try:
        xyz = raw[:, :3].astype(np.float64)
        ids = raw[:, 3:].astype(np.float64)
    except ValueError as err:
        raise PrometheusFormatError(path, None, f"non-numeric module row ({err})") from err
    if not np.all(ids == np.round(ids)):
        raise PrometheusFormatError(path, None, "string and om columns must be integers")
    df = pd.DataFrame(
        {
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
            "string_id": ids[:, 0].astype(np.int64),
            "sensor_id": ids[:, 1].astype(np.int64),
        }
    )
    if df.duplicated(["string_id", "sensor_id"]).any():
        dup = df[df.duplicated(["string_id", "sensor_id"])].iloc[0]
        raise PrometheusFormatError(
            path, None, f"module (string {dup.string_id}, om {dup.sensor_id}) listed twice"
        )
    df.attrs.update(attrs)
    return df


def write_geometry(
    path: str | os.PathLike,
    geometry: pd.DataFrame,
    medium: str = "ice",
    dom_radius_cm: float = 30.0,
) -> Path:
    """Write a geometry DataFrame (x, y, z, string_id, sensor_id) as a ``.geo`` file, atomically."""
    path = Path(path)
    missing = [c for c in ("x", "y", "z", "string_id", "sensor_id") if c not in geometry.columns]
    if missing:
        raise PrometheusFormatError(path, None, f"geometry lacks column '{missing[0]}'")
    lines = [
        "### Metadata ###",
        f"Medium:\t{medium}",
        f"DOM Radius [cm]:\t{dom_radius_cm:g}",
        _MODULES_HEADER,
    ]
    for x, y, z, s, o in geometry[["x", "y", "z", "string_id", "sensor_id"]].itertuples(
        index=False
    ):
        lines.append(f"{x:.2f}\t{y:.2f}\t{z:.2f}\t{int(s)}\t{int(o)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
