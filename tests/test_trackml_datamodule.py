"""TrackMLDataModule: sub-events, splits, views and caching, on copies of the real event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.data.trackml.datamodule import SUBEVENT_STRIDE, TrackMLDataModule
from hepexp.data.trackml.io import event_prefix, load_event, write_event
from hepexp.errors import ConfigError, DataError

from .conftest import shared_file


@pytest.fixture(scope="module")
def event_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three source events: the real event written under ids 1, 2, 3."""
    prefix = shared_file("trackml", "event000000001-hits.csv.gz").parent / "event000000001"
    frames = load_event(prefix)
    directory = tmp_path_factory.mktemp("events")
    for i in (1, 2, 3):
        write_event(event_prefix(directory, i), *frames)
    return directory


def _dm(event_dir: Path, tmp_path: Path, view: str = "event_hits", **kwargs) -> TrackMLDataModule:
    options = dict(
        source=str(event_dir),
        data_dir=str(tmp_path),
        batch_size=4,
        splits={"train": 1, "val": 1, "test": 1},
        subevents_per_event=3,
        prepare_workers=1,  # no process pool for three events
    )
    options.update(kwargs)
    return TrackMLDataModule(view, **options)


def test_subevents_and_splits(event_dir: Path, tmp_path: Path) -> None:
    dm = _dm(event_dir, tmp_path)
    assert [dm.source_events(s) for s in ("train", "val", "test")] == [[1], [2], [3]]
    dm.setup()
    train = dm.dataset("train")
    assert len(train) == 3
    assert list(train.event_ids) == [SUBEVENT_STRIDE + k for k in range(3)]
    for i in range(3):
        hits = train[i]["hits"]
        n_particles = len(np.unique(hits["particle_id"]))
        assert 10 <= n_particles <= 50
        assert (hits["particle_id"] != 0).all(), "noise dropped by default"
    # the frames of events() are exactly the cached sub-events
    for (event_id, frames), i in zip(dm.events("train"), range(3), strict=True):
        assert event_id == train.event_ids[i]
        np.testing.assert_array_equal(
            np.sort(frames.hits.hit_id), np.sort(train[i]["hits"]["hit_id"])
        )
        assert frames.truth.weight.sum() == pytest.approx(1.0)
        # ... and event() looks each one up by id, in any order
        pd.testing.assert_frame_equal(dm.event("train", event_id).truth, frames.truth)
    assert dm.event("train", train.event_ids[0]).hits.equals(next(dm.events("train"))[1].hits)
    with pytest.raises(DataError, match="split 'val' has no event 1000"):
        dm.event("val", SUBEVENT_STRIDE)  # a train event
    # truly random particles: different sub-events of one source differ
    assert len({tuple(np.unique(train[i]["hits"]["particle_id"])) for i in range(3)}) == 3


def test_cache_is_deterministic_and_keyed_by_settings(event_dir: Path, tmp_path: Path) -> None:
    a = _dm(event_dir, tmp_path)
    a.setup()
    b = _dm(event_dir, tmp_path / "other")
    b.setup()
    np.testing.assert_array_equal(
        a.dataset("val")[1]["hits"]["hit_id"], b.dataset("val")[1]["hits"]["hit_id"]
    )
    c = _dm(event_dir, tmp_path, seed=7)
    c.setup()
    assert c._cache_dir("val") != a._cache_dir("val")
    assert not np.array_equal(
        c.dataset("val")[1]["hits"]["hit_id"], a.dataset("val")[1]["hits"]["hit_id"]
    )


def test_event_hits_batches(event_dir: Path, tmp_path: Path) -> None:
    dm = _dm(event_dir, tmp_path, noise=True)
    batch = next(iter(dm.loader("test", shuffle=False)))
    x, mask = batch["x"], batch["mask"]
    assert x.shape[0] == 3 and x.shape[2] == 3 and batch["y"].shape[2] == 4
    assert x[~mask].abs().sum() == 0 and (batch["hit_id"][~mask] == -1).all()
    assert x[mask].abs().max() < 3.1, "positions in units of coord_scale = 1 m"
    assert (batch["particle_id"][mask] == 0).any(), "noise kept on request"
    theta = batch["y"][..., 0][mask & (batch["particle_id"] > 0)]
    assert ((theta >= 0) & (theta <= torch.pi)).all()


def test_track_and_hit_views(event_dir: Path, tmp_path: Path) -> None:
    barrel = {"volumes": [8, 13, 17]}
    tracks = _dm(
        event_dir,
        tmp_path,
        view="track_hits",
        particles_per_event=None,
        selection=barrel,
        coord_scale=200.0,
        batch_size=16,
    )
    batch = next(iter(tracks.loader("train")))
    assert batch["x"].shape == (16, 32, 3)
    assert (batch["lengths"] >= 6).all() and (batch["mask"].sum(1) == batch["lengths"]).all()
    assert set(batch["volume_id"][batch["mask"]].unique().tolist()) <= {8, 13, 17}
    distance = batch["x"].norm(dim=-1)
    ordered = distance[:, 1:] >= distance[:, :-1] - 1e-6
    assert ordered[batch["mask"][:, 1:]].all(), "hits ordered by distance from the origin"
    hits = _dm(
        event_dir, tmp_path, view="hits", particles_per_event=None, selection=barrel, batch_size=64
    )
    hits.setup()
    frame, truth = load_event(event_prefix(event_dir, 1), ["hits", "truth"])
    expected = (
        frame.volume_id.isin([8, 13, 17]).to_numpy() & (truth.particle_id != 0).to_numpy()
    ).sum()
    assert len(hits.dataset("train")) == expected, "all barrel hits, noise removed"
    batch = next(iter(hits.loader("train")))
    assert batch["x"].shape == (64, 3)


def test_graph_view(event_dir: Path, tmp_path: Path) -> None:
    dm = _dm(
        event_dir, tmp_path, view="graph", particles_per_event=None, batch_size=2, use_cells=True
    )
    batch = next(iter(dm.loader("train", shuffle=False)))
    n = len(batch["x"])
    assert batch["features"].shape == (n, 5)
    src, dst = batch["truth_edges"]
    assert (batch["particle_id"][src] == batch["particle_id"][dst]).all()
    assert batch["batch"].max() == 0 and len(batch["event_id"]) == 1


def test_bad_configs(event_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.splits"):
        _dm(event_dir, tmp_path, splits={"train": 1, "test": 1})
    with pytest.raises(ConfigError, match="data.selection: unknown keys"):
        _dm(event_dir, tmp_path, selection={"volume": [8]})
    with pytest.raises(DataError, match="neither 'simulate' nor a directory"):
        _dm(tmp_path / "missing", tmp_path).setup()
    with pytest.raises(DataError, match="fewer than particles_per_event"):
        _dm(event_dir, tmp_path, particles_per_event=[600, 700]).setup()
    with pytest.raises(ConfigError, match="cannot provide view 'jet_vectors'"):
        _dm(event_dir, tmp_path, view="jet_vectors")


def test_parallel_preparation_gives_the_serial_result(tmp_path: Path) -> None:
    """Simulation and caching in worker processes: byte-identical events, identical records."""
    settings = dict(
        source="simulate",
        simulation={"n_events": 6, "n_particles": 80, "seed": 3},
        splits={"train": 4, "val": 1, "test": 1},
        subevents_per_event=4,
        batch_size=2,
    )
    serial = TrackMLDataModule(
        "event_hits", data_dir=str(tmp_path / "a"), prepare_workers=1, **settings
    )
    parallel = TrackMLDataModule(
        "event_hits", data_dir=str(tmp_path / "b"), prepare_workers=2, **settings
    )
    for dm in (serial, parallel):
        dm.setup()
    for i in range(1, 7):
        a = Path(f"{event_prefix(serial.source_dir(), i)}-hits.csv").read_bytes()
        assert a == Path(f"{event_prefix(parallel.source_dir(), i)}-hits.csv").read_bytes()
    for split in ("train", "val", "test"):
        a, b = serial.dataset(split), parallel.dataset(split)
        assert list(a.event_ids) == list(b.event_ids) and len(a) == len(b)
        for i in range(len(a)):
            for key in ("x", "targets", "particle_id", "hit_id"):
                np.testing.assert_array_equal(a[i]["hits"][key], b[i]["hits"][key])
    with pytest.raises(ValueError, match="prepare_workers"):
        TrackMLDataModule("event_hits", data_dir=str(tmp_path / "c"), prepare_workers=0, **settings)


@pytest.mark.parametrize(("view", "key"), [("event_hits", "hits"), ("graph", "nodes")])
def test_raw_files_reach_the_model_as_training_events(
    event_dir: Path, tmp_path: Path, view: str, key: str
) -> None:
    """One input path: an event read from raw files (convert.py) gives the model the same
    inputs, through the same collation, as the cached training record of that event."""
    dm = _dm(event_dir, tmp_path, view, particles_per_event=None, noise=True, batch_size=1)
    dm.setup()
    item = dm.dataset("test")[0]
    raw = dict(dm.raw_events(event_dir))
    assert sorted(raw) == [1, 2, 3] and dm.raw_events(raw[3]) == [(3, raw[3])]
    record = dm.model_inputs(*dm.read_raw_event(raw[3])) | {"event_id": item["event_id"]}
    assert set(record[key]) < set(item[key]), "the training record adds truth fields only"
    for name, value in record[key].items():
        np.testing.assert_array_equal(value, item[key][name], err_msg=name)
    if view == "event_hits":  # batched as in training (the GNN reads one event's nodes)
        trained, converted = dm.collate_fn()([item]), dm.collate_fn()([record])
        for name in ("x", "mask", "hit_id", "event_id"):
            torch.testing.assert_close(converted[name], trained[name])
    with pytest.raises(DataError, match="no TrackML events"):
        dm.raw_events(tmp_path)
    with pytest.raises(DataError, match="an event prefix"):
        dm.raw_events(tmp_path / "hits.csv")
