"""Reading and writing Prometheus event Parquet files and .geo geometries."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hepexp.data.prometheus.io import (
    EVENT_SCHEMA,
    MC_TRUTH_FIELDS,
    PrometheusFormatError,
    iter_events,
    read_config,
    read_events,
    read_geometry,
    write_events,
    write_geometry,
)

from .prometheus_helpers import real_events_path, real_geo_path


def toy_events(n_photons=(3, 0, 2)) -> ak.Array:
    """Small hand-made events with every field of the real schema."""
    n = len(n_photons)
    mc = {}
    for name, is_list, dtype in MC_TRUTH_FIELDS:
        if is_list:
            mc[name] = ak.Array([[1.0 + i, 2.0 + i] for i in range(n)])
        else:
            mc[name] = np.arange(n, dtype=dtype) + 1
    photons = {
        "sensor_pos_x": ak.Array([[10.0 * k for k in range(m)] for m in n_photons]),
        "sensor_pos_y": ak.Array([[-1.0] * m for m in n_photons]),
        "sensor_pos_z": ak.Array([[-2000.0] * m for m in n_photons]),
        "string_id": ak.Array([[5] * m for m in n_photons]),
        "sensor_id": ak.Array([list(range(1, m + 1)) for m in n_photons]),
        "t": ak.Array([[100.0 + k for k in range(m)] for m in n_photons]),
        "id_idx": ak.Array([[1] * m for m in n_photons]),
    }
    return ak.zip(
        {"mc_truth": ak.zip(mc, depth_limit=1), "photons": ak.zip(photons, depth_limit=1)},
        depth_limit=1,
    )


def test_real_file_contents():
    path = real_events_path()
    events = read_events(path)
    assert len(events) == 10
    assert events.fields == ["mc_truth", "photons"]
    ph = events.photons
    n_om = sum(
        len(np.unique(ak.to_numpy(s) * 1000 + ak.to_numpy(o)))
        for s, o in zip(ph.string_id, ph.sensor_id, strict=True)
    )
    assert n_om == 2136
    assert ak.sum(ak.num(ph.t)) == 54550 + 1 + 193 + 1157 + 151579 + 472 + 6783 + 21 + 2163 + 295
    assert set(ak.to_numpy(events.mc_truth.initial_state_type)) == {12}
    cfg = read_config(path)
    assert cfg["injection"]["LeptonInjector"]["simulation"]["minimal energy"] == 1000.0
    assert cfg["detector"]["padding"] == 200


def test_roundtrip_schema_identical_to_real(tmp_path):
    path = real_events_path()
    events, cfg = read_events(path), read_config(path)
    out = write_events(tmp_path / "copy.parquet", events, cfg, row_group_size=4)
    # identical schema: names, types, nesting, nullability, field and schema metadata
    assert pq.read_schema(out).equals(pq.read_schema(path), check_metadata=True)
    assert pq.ParquetFile(out).num_row_groups == 3
    assert ak.array_equal(read_events(out), events)
    assert read_config(out) == cfg


def test_write_toy_events_and_subcolumns(tmp_path):
    events = toy_events()
    out = write_events(tmp_path / "toy.parquet", events, {"run": {"seed": 1}})
    ref = tmp_path / "ref.parquet"
    pq.write_table(
        EVENT_SCHEMA.empty_table().replace_schema_metadata(pq.read_schema(out).metadata), ref
    )
    assert pq.read_schema(out).equals(pq.read_schema(ref), check_metadata=True)
    ref.unlink()
    back = read_events(out, columns=["photons.t", "photons.sensor_id"])
    assert back.fields == ["photons"] and back.photons.fields == ["t", "sensor_id"]
    assert back.photons.t.tolist() == [[100.0, 101.0, 102.0], [], [100.0, 101.0]]
    assert read_config(out) == {"run": {"seed": 1}}
    assert [f.name for f in tmp_path.iterdir()] == ["toy.parquet"]  # no temp files left


def test_iter_events_streams_all_rows_in_order(tmp_path):
    events = toy_events(n_photons=tuple(range(7)))
    a = write_events(tmp_path / "a.parquet", events, {}, row_group_size=3)
    b = write_events(tmp_path / "b.parquet", events[:2], {})
    batches = list(iter_events([a, b], batch_size=2, columns=["photons"]))
    assert all(len(x) <= 2 for x in batches)
    counts = np.concatenate([ak.to_numpy(ak.num(x.photons.t)) for x in batches])
    assert counts.tolist() == list(range(7)) + [0, 1]


def test_write_is_atomic_on_bad_input(tmp_path):
    events = toy_events()
    bad = ak.zip({"mc_truth": events.mc_truth}, depth_limit=1)  # no photons
    with pytest.raises(PrometheusFormatError, match="photons"):
        write_events(tmp_path / "bad.parquet", bad, {})
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed overwrite untouched
    good = write_events(tmp_path / "good.parquet", events, {"v": 1})
    with pytest.raises(PrometheusFormatError):
        write_events(good, bad, {"v": 2})
    assert read_config(good) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["good.parquet"]


def _write_table(path, photons: dict[str, pa.Array]):
    n = len(next(iter(photons.values())))
    mc = pa.StructArray.from_arrays([pa.array(np.ones(n, dtype=np.int64))], names=["interaction"])
    table = pa.table(
        {
            "mc_truth": mc,
            "photons": pa.StructArray.from_arrays(list(photons.values()), names=list(photons)),
        }
    )
    pq.write_table(table, path)


def test_clear_errors_for_missing_and_mistyped_fields(tmp_path):
    lists = {
        k: pa.array([[1.0, 2.0]], type=pa.large_list(pa.float64()))
        for k in ("sensor_pos_x", "sensor_pos_y", "sensor_pos_z")
    }
    ids = {k: pa.array([[1, 2]], type=pa.list_(pa.int32())) for k in ("string_id", "sensor_id")}

    missing = tmp_path / "missing_t.parquet"
    _write_table(missing, {**lists, **ids})
    with pytest.raises(PrometheusFormatError, match=r"missing_t\.parquet.*'photons\.t'"):
        read_events(missing, columns=["photons"])

    wrong = tmp_path / "wrong_t.parquet"
    _write_table(wrong, {**lists, **ids, "t": pa.array([["a", "b"]])})
    with pytest.raises(
        PrometheusFormatError, match=r"wrong_t\.parquet.*'photons\.t'.*list of floating"
    ):
        read_events(wrong, columns=["photons"])

    scalar = tmp_path / "scalar_t.parquet"
    _write_table(scalar, {**lists, **ids, "t": pa.array([1.0])})
    with pytest.raises(PrometheusFormatError, match=r"'photons\.t'.*expected list"):
        list(iter_events(scalar, columns=["photons"]))

    # int32 ids and a missing optional id_idx are accepted and normalised to int64
    ok = tmp_path / "ok.parquet"
    _write_table(ok, {**lists, **ids, "t": pa.array([[5.0, 6.0]], type=pa.list_(pa.float32()))})
    ev = read_events(ok, columns=["photons"])
    assert str(ak.type(ev.photons.string_id)).endswith("int64")
    assert ev.photons.t.tolist() == [[5.0, 6.0]]

    nulls = tmp_path / "nulls.parquet"
    _write_table(nulls, {**lists, **ids, "t": pa.array([[5.0, None]])})
    with pytest.raises(PrometheusFormatError, match=r"nulls\.parquet.*'photons\.t' has 1 null"):
        read_events(nulls)

    with pytest.raises(PrometheusFormatError, match=r"ok\.parquet.*config_prometheus"):
        read_config(ok)
    with pytest.raises(PrometheusFormatError, match="mc_truth.bjorken_x"):
        read_events(ok, columns=["mc_truth.bjorken_x"])
    with pytest.raises(PrometheusFormatError, match="unknown column 'latents'"):
        read_events(ok, columns=["latents"])
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_events(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(PrometheusFormatError, match="junk.parquet"):
        read_events(tmp_path / "junk.parquet")

    bad_cfg = tmp_path / "bad_cfg.parquet"
    table = pq.read_table(ok).replace_schema_metadata({b"config_prometheus": b"{oops"})
    pq.write_table(table, bad_cfg)
    with pytest.raises(PrometheusFormatError, match="not valid JSON"):
        read_config(bad_cfg)


def test_real_geometry_roundtrip(tmp_path):
    geo = read_geometry(real_geo_path())
    assert len(geo) == 5160 and geo.string_id.nunique() == 86
    assert geo.string_id.min() == 1 and geo.sensor_id.min() == 1 and geo.sensor_id.max() == 60
    assert geo.attrs == {"medium": "ice", "dom_radius_cm": 30.0}
    # 17 m OM spacing on standard strings, 1450-2450 m depth
    z1 = geo[geo.string_id == 1].z.to_numpy()
    assert np.median(-np.diff(z1)) == pytest.approx(17.02, abs=0.01)
    assert geo.z.min() > -2461 and geo.z.max() < -1420
    out = write_geometry(tmp_path / "copy.geo", geo)
    back = read_geometry(out)
    np.testing.assert_allclose(back[["x", "y", "z"]], geo[["x", "y", "z"]], atol=0.005)
    assert (back.sensor_id == geo.sensor_id).all()


def test_geometry_errors(tmp_path):
    bad = tmp_path / "bad.geo"
    bad.write_text("### Metadata ###\nMedium:\tice\n### Modules ###\n1 2 3 1 1\n1 2 3 1\n")
    with pytest.raises(PrometheusFormatError, match=r"bad\.geo:5: expected 5 columns"):
        read_geometry(bad)
    bad.write_text("1 2 3 1 1\n")
    with pytest.raises(PrometheusFormatError, match="Modules"):
        read_geometry(bad)
    bad.write_text("### Modules ###\n1 2 3 1 1\n4 5 6 1 1\n")
    with pytest.raises(PrometheusFormatError, match="listed twice"):
        read_geometry(bad)
    bad.write_text("### Modules ###\n1 2 x 1 1\n")
    with pytest.raises(PrometheusFormatError, match="non-numeric"):
        read_geometry(bad)


def test_config_is_json_in_schema_metadata(tmp_path):
    out = write_events(tmp_path / "c.parquet", toy_events(), {"a": [1, 2]})
    raw = pq.read_schema(out).metadata[b"config_prometheus"]
    assert json.loads(raw) == {"a": [1, 2]}
