"""Per-OM timing histograms: binning convention, equality with a reference loop, file layout."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hepexp.data.prometheus.io import read_events, write_events
from hepexp.data.prometheus.preprocess import (
    densify,
    om_batch,
    om_histograms,
    preprocess_events,
    read_timing_meta,
)

from .prometheus_helpers import real_events_path
from .test_prometheus_io import toy_events


def photons_from(times_per_om: list[list[float]], string: int = 7) -> ak.Array:
    """One event with the given photon times on OMs (string, 1), (string, 2), ..."""
    t = [x for om in times_per_om for x in om]
    sensor = [i + 1 for i, om in enumerate(times_per_om) for _ in om]
    n = len(t)
    return ak.Array(
        [
            {
                "sensor_pos_x": [1.0] * n,
                "sensor_pos_y": [2.0] * n,
                "sensor_pos_z": [-2000.0 - s for s in sensor],
                "string_id": [string] * n,
                "sensor_id": sensor,
                "t": t,
                "id_idx": [1] * n,
            }
        ]
    )


def dense_of(h: dict, num_bins: int) -> np.ndarray:
    return densify(h["offsets"], h["bin_index"], h["bin_count"], num_bins)


def test_bin_i_covers_i_w_to_next_and_late_hits_go_to_last_bin():
    t0 = 500.0
    times = [
        [t0, t0 + 0.999, t0 + 1.0, t0 + 2.5],
        [t0 + 6398.9999, t0 + 6399.0, t0 + 6400.0, t0 + 12000.0],
    ]
    h = om_histograms(photons_from(times), num_bins=6400, max_time=6400.0)
    d = dense_of(h, 6400)
    assert d.shape == (2, 6400)
    assert d[0, 0] == 2 and d[0, 1] == 1 and d[0, 2] == 1 and d[0].sum() == 4  # not one bin late
    assert d[1, 6398] == 1 and d[1, 6399] == 3
    assert h["n_photons"].tolist() == [4, 4]
    assert h["bin_index"].tolist() == [0, 1, 2, 6398, 6399] and h["bin_count"].tolist() == [
        2,
        1,
        1,
        1,
        3,
    ]
    # any bin count: 100 bins of 64 ns
    h = om_histograms(
        photons_from([[t0, t0 + 63.9, t0 + 64.0, t0 + 6399.0, t0 + 7000.0]]), num_bins=100
    )
    assert h["bin_index"].tolist() == [0, 1, 99] and h["bin_count"].tolist() == [2, 1, 2]
    # times are relative to the first photon of the whole event, not of the OM
    h = om_histograms(photons_from([[100.0], [130.0, 131.5]]), num_bins=64, max_time=64.0)
    assert h["bin_index"].tolist() == [0, 30, 31]
    assert h["z"].tolist() == [-2001.0, -2002.0] and h["string_id"].tolist() == [7, 7]


def test_matches_per_om_histogram_reference_on_real_events():
    events = read_events(real_events_path(), columns=["photons"])
    num_bins, max_time = 640, 6400.0
    h = om_histograms(events.photons, num_bins, max_time)
    assert len(h["n_photons"]) == 2136
    assert h["n_photons"].sum() == ak.sum(ak.num(events.photons.t))
    assert np.median(h["n_photons"]) == 4
    dense = dense_of(h, num_bins)
    np.testing.assert_array_equal(dense.sum(axis=1), h["n_photons"])
    edges = np.linspace(0.0, max_time, num_bins + 1)
    row = 0
    for i, ev in enumerate(events.photons):
        t = ak.to_numpy(ev.t)
        rel = np.minimum(t - t.min(), np.nextafter(max_time, 0))
        key = ak.to_numpy(ev.string_id) * 1000 + ak.to_numpy(ev.sensor_id)
        for k in np.unique(key):  # sorted by string, then sensor: the output order
            ref, _ = np.histogram(rel[key == k], bins=edges)
            np.testing.assert_array_equal(dense[row], ref)
            assert (h["event_index"][row], h["string_id"][row], h["sensor_id"][row]) == (
                i,
                k // 1000,
                k % 1000,
            )
            x = ak.to_numpy(ev.sensor_pos_x)[key == k][0]
            assert h["x"][row] == np.float32(x)
            row += 1
    assert row == len(dense)


def test_preprocess_files_chunks_formats_and_atomicity(tmp_path):
    src = real_events_path()
    out = tmp_path / "sparse"
    paths = preprocess_events(
        [src, src], out, num_bins=6400, chunk_size=1000, row_group_size=300, progress=False
    )
    assert [p.name for p in paths] == [f"part-{i:05d}.parquet" for i in range(5)]
    rows = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    assert rows == [1000, 1000, 1000, 1000, 272]  # 2 x 2136 OMs
    assert max(pq.ParquetFile(paths[0]).metadata.row_group(i).num_rows for i in range(4)) <= 300
    meta = read_timing_meta(paths[0])
    assert meta["format"] == "sparse" and meta["num_bins"] == 6400 and meta["bin_width"] == 1.0
    table = pq.read_table(paths[-1])
    assert table.column("event_index").to_numpy().max() == 19  # second copy: events 10-19
    assert sorted(f.name for f in out.iterdir()) == [p.name for p in paths]  # no temp files left

    dense_paths = preprocess_events(
        src, tmp_path / "dense", chunk_size=5000, fmt="dense", progress=False
    )
    assert len(dense_paths) == 1
    dense = om_batch(pq.read_table(dense_paths[0]), 6400)
    sparse = om_batch(pa.concat_tables([pq.read_table(p) for p in paths[:3]]).slice(0, 2136), 6400)
    for k in ("counts", "pos", "string_id", "sensor_id", "event_index", "n_photons"):
        np.testing.assert_array_equal(dense[k], sparse[k])
    assert dense["counts"].dtype == np.float32 and dense["counts"].shape == (2136, 6400)
    np.testing.assert_array_equal(dense["counts"].sum(axis=1), dense["n_photons"])

    # re-running with bigger chunks replaces the parts and removes stale ones
    again = preprocess_events(src, out, chunk_size=250_000, progress=False)
    assert [p.name for p in again] == ["part-00000.parquet"]
    assert sorted(f.name for f in out.iterdir()) == ["part-00000.parquet"]


def test_events_without_photons_and_bad_arguments(tmp_path):
    events = toy_events(n_photons=(0, 3, 0))
    path = write_events(tmp_path / "toy.parquet", events, {})
    parts = preprocess_events(path, tmp_path / "out", num_bins=10, max_time=10.0, progress=False)
    batch = om_batch(pq.read_table(parts[0]), 10)
    assert batch["event_index"].tolist() == [1, 1, 1]  # the toy OMs are sensors 1, 2, 3
    assert batch["counts"][:, 0].tolist() == [1.0, 0.0, 0.0] and batch["counts"][1, 1] == 1.0
    with pytest.raises(ValueError, match="fmt must be one of"):
        preprocess_events(path, tmp_path / "x", fmt="csr")
    with pytest.raises(ValueError, match="num_bins"):
        om_histograms(events.photons, num_bins=0)
    with pytest.raises(ValueError, match="max_time"):
        om_histograms(events.photons, max_time=-1.0)
    with pytest.raises(ValueError, match="num_bins = 7"):
        dense_paths = preprocess_events(
            path, tmp_path / "d", num_bins=10, fmt="dense", progress=False
        )
        om_batch(pq.read_table(dense_paths[0]), 7)
    with pytest.raises(ValueError, match="not an OM timing file"):
        read_timing_meta(path)


def test_huge_ids_use_the_multi_key_fallback():
    times = [[5.0, 9.0, 9.5], [7.0], [6.0, 3000.0]]
    nb = 2**30  # 30 bits of bins + 31 bits of string id > 62: falls back to np.lexsort
    small = om_histograms(photons_from(times, string=3), num_bins=nb)
    huge = om_histograms(photons_from(times, string=2**31 - 1), num_bins=nb)
    for k in ("offsets", "bin_index", "bin_count", "n_photons", "sensor_id", "z"):
        np.testing.assert_array_equal(small[k], huge[k])
    assert (huge["string_id"] == 2**31 - 1).all()
    with pytest.raises(ValueError, match="32-bit"):
        om_histograms(photons_from(times, string=2**31))


def test_streaming_om_batches_into_a_dataloader(tmp_path):
    from functools import partial

    import torch
    from torch.utils.data import DataLoader

    from hepexp.data.streaming import ParquetStream

    parts = preprocess_events(
        real_events_path(), tmp_path, chunk_size=700, row_group_size=256, progress=False
    )
    ds = ParquetStream(
        parts,
        batch_size=128,
        shuffle=True,
        shuffle_buffer=512,
        transform=partial(om_batch, num_bins=6400),
    )
    batches = list(DataLoader(ds, batch_size=None, num_workers=0))
    assert all(
        isinstance(b["counts"], torch.Tensor) and b["counts"].shape[1] == 6400 for b in batches
    )
    counts = torch.cat([b["counts"] for b in batches])
    n_photons = torch.cat([b["n_photons"] for b in batches])
    assert counts.shape == (2136, 6400) and counts.dtype == torch.float32
    assert torch.equal(counts.sum(dim=1), n_photons.float())
    assert int(n_photons.sum()) == 217214
