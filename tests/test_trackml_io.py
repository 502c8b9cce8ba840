"""Tests of the TrackML reader/writer and the detector geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from hepexp.data.trackml.geometry import (
    DetectorFormatError,
    layer_table_from_detectors,
    load_detectors,
    trackml_geometry,
)
from hepexp.data.trackml.io import (
    COLUMNS,
    TrackMLFormatError,
    list_events,
    load_dataset,
    load_event,
    write_event,
)

from .conftest import SHARED, require

REAL = SHARED / "data" / "trackml"


def real_prefix() -> Path:
    prefix = REAL / "event000000001"
    hits = Path(f"{prefix}-hits.csv.gz")
    require(hits.exists(), f"real TrackML event absent: {hits} (../shared not present)")
    return prefix


def small_event(rng: np.random.Generator, n_hits: int = 30) -> dict[str, pd.DataFrame]:
    """A small consistent event with 64-bit particle ids (bits above 2**53 set; the last id has
    bit 63 set, a negative int64)."""
    raw = [0, (3 << 52) | (7 << 36) | 1, (4095 << 52) | (65535 << 36) | 5]
    pids = np.array(raw, np.uint64).view(np.int64)
    hit_id = np.arange(1, n_hits + 1, dtype=np.int64)
    owner = rng.integers(0, 3, n_hits)
    hits = pd.DataFrame(
        {
            "hit_id": hit_id,
            "x": rng.normal(0, 100, n_hits),
            "y": rng.normal(0, 100, n_hits),
            "z": rng.normal(0, 1000, n_hits),
            "volume_id": rng.choice([7, 8, 9], n_hits),
            "layer_id": rng.choice([2, 4], n_hits),
            "module_id": rng.integers(1, 1000, n_hits),
        }
    )
    cells = pd.DataFrame(
        {
            "hit_id": np.repeat(hit_id, 2),
            "ch0": rng.integers(0, 300, 2 * n_hits),
            "ch1": rng.integers(0, 1200, 2 * n_hits),
            "value": rng.random(2 * n_hits),
        }
    )
    particles = pd.DataFrame(
        {
            "particle_id": pids[1:],
            "particle_type": [211, -2212],
            "vx": [0.01, -0.02],
            "vy": [0.0, 1e-3],
            "vz": [12.5, -40.0],
            "px": [0.3, -1.2],
            "py": [0.1, 0.4],
            "pz": [2.0, -0.7],
            "q": [1, -1],
            "nhits": [int((owner == 1).sum()), int((owner == 2).sum())],
        }
    )
    truth = pd.DataFrame(
        {
            "hit_id": hit_id,
            "particle_id": pids[owner],
            "tx": hits["x"],
            "ty": hits["y"],
            "tz": hits["z"],
            "tpx": rng.normal(size=n_hits),
            "tpy": rng.normal(size=n_hits),
            "tpz": rng.normal(size=n_hits),
            "weight": rng.random(n_hits) / n_hits,
        }
    )
    return {"hits": hits, "cells": cells, "particles": particles, "truth": truth}


# ---------------------------------------------------------------- reading the real files


def test_load_real_event_counts_and_dtypes():
    hits, cells, particles, truth = load_event(real_prefix())
    assert (len(hits), len(cells), len(particles), len(truth)) == (5527, 18564, 548, 5527)
    for frame, part in zip((hits, cells, particles, truth), COLUMNS, strict=True):
        assert list(frame.columns) == list(COLUMNS[part])
        for column, kind in COLUMNS[part].items():
            assert frame[column].dtype == (np.int64 if kind == "i" else np.float64), column
    # 64-bit ids intact: compare with the text of the file, parsed as Python ints
    with gzip.open(f"{real_prefix()}-particles.csv.gz", "rt") as f:
        text_ids = [int(line.split(",")[0]) for line in f.readlines()[1:]]
    assert particles["particle_id"].tolist() == text_ids
    assert max(text_ids) > 2**53  # float64 could not hold these exactly
    # generation field decodes: 430 primaries in the real subsample
    assert int(((particles["particle_id"].to_numpy() >> 24) & 0xFFF == 0).sum()) == 430
    assert set(truth["particle_id"]) - {0} <= set(particles["particle_id"])
    assert (truth["particle_id"] == 0).sum() == 829  # noise hits
    assert hits["volume_id"].nunique() == 9


def test_load_parts_order_and_dataset():
    prefix = real_prefix()
    truth, hits = load_event(prefix, parts=("truth", "hits"))
    assert "weight" in truth.columns and "volume_id" in hits.columns
    events = list(load_dataset(REAL, parts=("particles",)))
    assert [e[0] for e in events] == [1]
    assert len(events[0][1]) == 548


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("compress", [False, True])
def test_write_load_round_trip(tmp_path, compress):
    ev = small_event(np.random.default_rng(0))
    prefix = tmp_path / "event000000042"
    written = write_event(prefix, **ev, compress=compress, float_format=None)
    assert all(p.name.endswith(".csv.gz" if compress else ".csv") for p in written)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = dict(zip(COLUMNS, load_event(prefix), strict=True))
    for part, frame in ev.items():
        pd.testing.assert_frame_equal(loaded[part], frame.astype(loaded[part].dtypes))
    pid = loaded["particles"]["particle_id"].to_numpy()[1:].view(np.uint64)
    assert int(pid[0]) == (4095 << 52) | (65535 << 36) | 5
    # rewriting in the other variant replaces the stale file
    write_event(prefix, hits=ev["hits"], compress=not compress)
    assert len(list(tmp_path.glob("*-hits.csv*"))) == 1
    # default float format: 10 significant digits
    write_event(prefix, **ev)
    again = dict(zip(COLUMNS, load_event(prefix), strict=True))
    np.testing.assert_allclose(again["hits"]["x"], ev["hits"]["x"], rtol=1e-9)


def test_unsigned_ids_above_int64_keep_their_bits(tmp_path):
    ev = small_event(np.random.default_rng(5))
    prefix = tmp_path / "event000000001"
    write_event(prefix, particles=ev["particles"])
    path = Path(f"{prefix}-particles.csv")
    big = (4095 << 52) | (65535 << 36) | 5
    text = path.read_text().replace(str(np.int64(big - 2**64)), str(big))
    assert str(big) in text
    path.write_text(text)
    (particles,) = load_event(prefix, parts=("particles",))
    assert int(particles["particle_id"].to_numpy().view(np.uint64)[1]) == big


def test_load_dataset_sorted_lazy_skip(tmp_path):
    ev = small_event(np.random.default_rng(1))
    for event_id in (12, 3, 100):
        write_event(tmp_path / f"event{event_id:09d}", hits=ev["hits"], truth=ev["truth"])
    assert list_events(tmp_path) == [3, 12, 100]
    it = load_dataset(tmp_path, parts=("hits", "truth"))
    assert [e[0] for e in it] == [3, 12, 100]
    assert [e[0] for e in load_dataset(tmp_path, nevents=1, skip=1, parts=("hits",))] == [12]
    # lazy: a broken later event only fails when it is reached
    (tmp_path / "event000000100-hits.csv").write_text("hit_id,x\n1,2\n")
    it = load_dataset(tmp_path, parts=("hits",))
    assert next(it)[0] == 3
    assert next(it)[0] == 12
    with pytest.raises(TrackMLFormatError, match="event000000100-hits.csv"):
        next(it)


def test_load_dataset_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="no TrackML events"):
        load_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dataset(tmp_path / "absent")


# ---------------------------------------------------------------- malformed files


def _write_broken(tmp_path, part: str, edit) -> Path:
    ev = small_event(np.random.default_rng(2))
    prefix = tmp_path / "event000000001"
    write_event(prefix, **ev, float_format=None)
    path = Path(f"{prefix}-{part}.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return prefix


def _replace_field(lines, column, row, value):
    header = lines[0].split(",")
    i = header.index(column)
    fields = lines[row].split(",")
    fields[i] = value
    return [*lines[:row], ",".join(fields), *lines[row + 1 :]]


@pytest.mark.parametrize(
    ("part", "edit", "column", "message"),
    [
        (
            "hits",
            lambda ls: (
                [",".join(c for c in ls[0].split(",") if c != "z")]
                + [",".join(f for j, f in enumerate(r.split(",")) if j != 3) for r in ls[1:]]
            ),
            "z",
            "missing column",
        ),
        ("hits", lambda ls: _replace_field(ls, "x", 4, "abc"), "x", "expected a number"),
        ("hits", lambda ls: _replace_field(ls, "volume_id", 2, "8.5"), "volume_id", "integer"),
        ("particles", lambda ls: _replace_field(ls, "particle_id", 1, ""), "particle_id", "NaN"),
        ("truth", lambda ls: _replace_field(ls, "particle_id", 3, "nan"), "particle_id", "NaN"),
        ("truth", lambda ls: _replace_field(ls, "hit_id", 5, "99999"), "hit_id", "not in"),
        ("cells", lambda ls: _replace_field(ls, "hit_id", 1, "-7"), "hit_id", "not in"),
        ("hits", lambda ls: _replace_field(ls, "hit_id", 2, "1"), "hit_id", "unique"),
        ("particles", lambda ls: _replace_field(ls, "q", 1, "plus"), "q", "integer"),
        ("truth", lambda ls: _replace_field(ls, "weight", 2, ""), "weight", "number"),
        ("cells", lambda ls: ls[:1], None, None),  # header only: valid, zero rows
        ("hits", lambda ls: [], None, "empty file"),
    ],
)
def test_malformed_files(tmp_path, part, edit, column, message):
    prefix = _write_broken(tmp_path, part, edit)
    if message is None:
        frames = load_event(prefix, parts=(part,))
        assert len(frames[0]) == 0
        return
    with pytest.raises(TrackMLFormatError, match=message) as info:
        load_event(prefix)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path.endswith(f"{part}.csv")
    assert err.column == column
    assert f"{part}.csv" in str(err)


def test_missing_file_and_ambiguous_variant(tmp_path):
    ev = small_event(np.random.default_rng(3))
    prefix = tmp_path / "event000000001"
    write_event(prefix, hits=ev["hits"])
    with pytest.raises(FileNotFoundError, match="cells"):
        load_event(prefix)
    (tmp_path / "event000000001-hits.csv.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="both exist"):
        load_event(prefix, parts=("hits",))
    with pytest.raises(ValueError, match="unknown TrackML part"):
        load_event(prefix, parts=("hitz",))


def test_write_rejects_float_ids_and_missing_columns(tmp_path):
    ev = small_event(np.random.default_rng(4))
    bad = ev["particles"].assign(particle_id=ev["particles"]["particle_id"].astype(float))
    with pytest.raises(ValueError, match="particle_id"):
        write_event(tmp_path / "event000000001", particles=bad)
    with pytest.raises(ValueError, match="missing column"):
        write_event(tmp_path / "event000000001", hits=ev["hits"].drop(columns="x"))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- geometry


def test_builtin_geometry_matches_real_detectors_file():
    path = REAL / "detectors.csv.gz"
    require(path.exists(), f"{path} absent (../shared not present)")
    real = load_detectors(path)
    geo = trackml_geometry()
    built = geo.modules()
    assert len(real) == len(built) == 18728
    ours, theirs = geo.layer_table(), layer_table_from_detectors(real)
    assert ours[["volume_id", "layer_id", "kind", "n_modules"]].equals(
        theirs[["volume_id", "layer_id", "kind", "n_modules"]]
    )
    barrel = theirs["kind"] == "barrel"
    np.testing.assert_allclose(ours["r"][barrel], theirs["r"][barrel], rtol=0.01)
    np.testing.assert_allclose(ours["z"][~barrel], theirs["z"][~barrel], rtol=0.01)
    for c in ("r_min", "r_max", "z_min", "z_max"):
        np.testing.assert_allclose(ours[c], theirs[c], rtol=0.01, atol=0.5)
    # the TrackML detector's radii / disk z
    assert theirs["r"][barrel].round().tolist() == [32, 72, 116, 172, 260, 360, 500, 660, 820, 1020]
    # module by module: same centres (to 0.01 mm) and axes; barrel ids identical
    key = ["volume_id", "layer_id"]
    for (vol, lay), mine in built.groupby(key):
        ref = real[(real.volume_id == vol) & (real.layer_id == lay)]
        a = mine[["cx", "cy", "cz"]].to_numpy()
        b = ref[["cx", "cy", "cz"]].to_numpy()
        dist, nearest = cKDTree(b).query(a)
        assert dist.max() < 0.01
        assert len(set(nearest)) == len(nearest)
        rot = [c for c in real.columns if c.startswith("rot_")]
        np.testing.assert_allclose(mine[rot].to_numpy(), ref[rot].to_numpy()[nearest], atol=1e-5)
        if vol in (8, 13, 17):
            assert np.array_equal(
                mine["module_id"].to_numpy(), ref["module_id"].to_numpy()[nearest]
            )


def test_load_detectors_errors(tmp_path):
    modules = trackml_geometry().modules().head(20)
    path = tmp_path / "detectors.csv"
    modules.drop(columns="pitch_v").to_csv(path)
    with pytest.raises(DetectorFormatError, match="pitch_v") as info:
        load_detectors(path)
    assert info.value.column == "pitch_v"
    bad = modules.astype({"cx": object})
    bad.loc[3, "cx"] = "x"
    bad.to_csv(path, index=False)
    with pytest.raises(DetectorFormatError, match="'cx'.*finite number"):
        load_detectors(path)
    modules.to_csv(path, index=False)
    assert len(load_detectors(path)) == 20
