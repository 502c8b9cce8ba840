"""data=prometheus: event splits, pre-processed cache, streaming every OM exactly once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hepexp.data.prometheus.datamodule import OMStream, PrometheusDataModule, densify_batch
from hepexp.data.prometheus.io import PrometheusFormatError, read_events, write_events
from hepexp.data.prometheus.preprocess import densify, om_histograms
from hepexp.errors import ConfigError, DataError

from .prometheus_helpers import real_events_path
from .test_prometheus_io import toy_events


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory):
    """12 simulated events, shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("prometheus_dm")
    dm = PrometheusDataModule(data_dir=str(directory), simulation={"n_events": 12, "seed": 3})
    dm.prepare_data()
    return directory


def module(data_dir, **kwargs) -> PrometheusDataModule:
    kwargs.setdefault("simulation", {"n_events": 12, "seed": 3})
    return PrometheusDataModule(data_dir=str(data_dir), **kwargs)


def om_keys(batches) -> list[tuple[int, int, int]]:
    keys = []
    for b in batches:
        keys += list(
            zip(*(b[k].tolist() for k in ("event_index", "string_id", "sensor_id")), strict=True)
        )
    return keys


def reference_histograms(dm: PrometheusDataModule) -> dict:
    photons = read_events(dm.event_files()[0], columns=["photons"]).photons
    return om_histograms(photons, dm.num_bins, dm.max_time)


def test_splits_are_disjoint_contiguous_event_ranges(sim_dir):
    dm = module(sim_dir)
    events = {s: dm.split_events(s) for s in ("train", "val", "test")}
    assert [len(v) for v in events.values()] == [10, 1, 1]  # round(0.8 * 12), ...
    assert np.array_equal(np.concatenate(list(events.values())), np.arange(12))
    h = reference_histograms(dm)
    for split, ids in events.items():
        dm.setup("fit" if split != "test" else "test")
        seen = {k[0] for k in om_keys(dm.loader(split, shuffle=False))}
        assert seen == set(ids[np.isin(ids, h["event_index"])].tolist()), split
        assert dm.num_oms(split) == int(np.isin(h["event_index"], ids).sum())
    # one split name takes every event; fractions are renormalised
    assert len(module(sim_dir, splits="test").split_events("test")) == 12
    assert len(module(sim_dir, splits={"train": 1, "test": 1}).split_events("test")) == 6
    assert len(module(sim_dir, splits="test").split_events("train")) == 0
    assert len(module(sim_dir, max_events=5, splits="val").split_events("val")) == 5


def test_streams_every_om_exactly_once_with_workers_and_ranks(sim_dir):
    dm = module(sim_dir, batch_size=7, row_group_size=16, chunk_size=50, num_workers=2)
    files = dm.split_files("train")
    assert len(files) > 2 and pq.ParquetFile(files[-1]).metadata.num_rows < 50  # partial chunk
    h = reference_histograms(dm)
    expected = {
        k
        for k in zip(
            h["event_index"].tolist(), h["string_id"].tolist(), h["sensor_id"].tolist(), strict=True
        )
        if k[0] in set(dm.split_events("train").tolist())
    }
    loader = dm.loader("train")
    epochs = [om_keys(loader), om_keys(loader)]
    for keys in epochs:
        assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    assert epochs[0] != epochs[1], "shuffled differently in each epoch"
    assert len(loader) == sum(1 for _ in loader), "len() counts the batches of every worker"
    # two DDP ranks: disjoint halves, together everything, equal batch counts
    per_rank = []
    for rank in (0, 1):
        stream = dm.stream("train")
        stream.rank, stream.world_size = rank, 2
        assert isinstance(stream, OMStream)
        batches = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2))
        assert len(batches) == len(stream)
        per_rank.append(om_keys(batches))
    assert not set(per_rank[0]) & set(per_rank[1])
    assert set(per_rank[0]) | set(per_rank[1]) == expected
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


def test_batches_hold_the_histograms_sparse_or_dense(sim_dir):
    dm = module(sim_dir, splits="test", dense=True, batch_size=10_000)
    batch = next(iter(dm.loader("test", shuffle=False)))
    h = reference_histograms(dm)
    assert batch["offsets"].tolist() == h["offsets"].tolist()
    assert batch["bin_index"].dtype == torch.int64 and batch["bin_count"].dtype == torch.float32
    assert torch.equal(batch["counts"], densify_batch(batch, dm.num_bins))
    assert np.array_equal(
        batch["counts"].numpy(), densify(h["offsets"], h["bin_index"], h["bin_count"], dm.num_bins)
    )
    assert batch["n_photons"].tolist() == h["n_photons"].tolist()
    assert torch.allclose(batch["pos"], torch.from_numpy(np.stack([h[c] for c in "xyz"], 1)))
    assert batch["counts"].sum(1).tolist() == batch["n_photons"].float().tolist()


def test_cache_is_reused_and_keyed_by_the_settings(sim_dir):
    dm = module(sim_dir)
    first = dm.split_files("val")[0]
    stamp = first.stat().st_mtime_ns
    assert module(sim_dir).split_files("val")[0].stat().st_mtime_ns == stamp
    other = module(sim_dir, num_bins=640).split_files("val")[0]
    assert other.parent.parent != first.parent.parent
    assert pq.read_table(other).column("bin_index").combine_chunks().values.to_numpy().max() < 640


def test_real_file_as_source_in_the_test_split(tmp_path):
    dm = PrometheusDataModule(data_dir=str(tmp_path), source=str(real_events_path()), splits="test")
    assert dm.num_oms("test") == 2136
    batches = list(dm.loader("test", shuffle=False, batch_size=1000))
    assert [len(b["n_photons"]) for b in batches] == [1000, 1000, 136]
    assert (
        sum(int(b["n_photons"].sum()) for b in batches) == 217_214
    )  # every photon of the 10 events
    # a directory of files and a list of files name the same events
    assert (
        PrometheusDataModule(
            data_dir=str(tmp_path), source=str(real_events_path().parent), splits="test"
        ).num_oms("test")
        == 2136
    )
    with pytest.raises(ConfigError, match="train split .* has no events"):
        dm.split_dir("train")


def test_bad_sources_and_settings(tmp_path):
    with pytest.raises(DataError, match="nowhere.parquet.*neither 'simulate'"):
        PrometheusDataModule(
            data_dir=str(tmp_path), source=str(tmp_path / "nowhere.parquet")
        ).event_files()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        PrometheusDataModule(data_dir=str(tmp_path), source=str(tmp_path / "empty")).event_files()
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x": [1.0]}), bad)
    dm = PrometheusDataModule(data_dir=str(tmp_path), source=str(bad), splits="test")
    with pytest.raises(PrometheusFormatError, match="bad.parquet: missing column 'photons'") as err:
        dm.prepare_data()
    # a data error like any other: it names the file
    assert isinstance(err.value, DataError) and err.value.path == str(bad)
    for splits in ("everything", {"train": 1.0, "holdout": 0.5}, {"train": -1.0}):
        with pytest.raises(ConfigError, match="data.splits"):
            PrometheusDataModule(splits=splits)
    with pytest.raises(ConfigError, match="data.simulation: unknown keys"):
        PrometheusDataModule(simulation={"n_event": 3})
    with pytest.raises(ConfigError, match="num_bins"):
        PrometheusDataModule(num_bins=0)
    with pytest.raises(ConfigError, match="cannot provide view"):
        PrometheusDataModule(view="event_hits")
    no_light = tmp_path / "dark.parquet"
    write_events(no_light, toy_events((0, 0)))
    dm = PrometheusDataModule(data_dir=str(tmp_path / "d"), source=str(no_light), splits="test")
    with pytest.raises(DataError, match="dark.parquet, field 'photons'.*no photons"):
        dm.prepare_data()
