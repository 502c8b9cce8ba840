"""data=trackml: TrackML events (simulated or real) served as the view a model needs.

Source events (a directory of real events, or events the built-in simulator writes once) are
split by event into train/val/test. Each is optionally reduced by a selection (volumes, pT,
hits per particle, noise) and cut into random sub-events of a..b particles, like the "TML:a-b"
datasets. The view's arrays are then written once to a memory-mapped cache, so training reads
them lazily and fast; ``events(split)`` regenerates the very same sub-events as DataFrames for
scoring.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hepexp.data.base import HEPDataModule
from hepexp.data.store import RecordStore, RecordStoreWriter
from hepexp.data.trackml import views
from hepexp.data.trackml.io import event_prefix, list_events, load_event
from hepexp.data.trackml.subevents import SubEvent, sample_subevent, select
from hepexp.errors import ConfigError, DataError
from hepexp.utils.parallel import ordered_map, resolve_workers

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_VERSION = 2
#: sub-event ids: source event id * SUBEVENT_STRIDE + index of the sub-event
SUBEVENT_STRIDE = 1000


# -- model inputs: the part of a view's record that needs no truth, in mm ----------------------
def _hits_inputs(hits: pd.DataFrame, cells: pd.DataFrame | None) -> dict[str, dict]:
    v = views.single_hits(hits, scale=1.0)
    return {"hits": {k: v[k] for k in ("x", "hit_id", "volume_id", "layer_id")}}


def _graph_inputs(hits: pd.DataFrame, cells: pd.DataFrame | None) -> dict[str, dict]:
    return {"nodes": views.graph_nodes(hits, cells)}


VIEW_INPUTS: dict[str, Callable[[pd.DataFrame, pd.DataFrame | None], dict[str, dict]]] = {
    "event_hits": _hits_inputs,
    "hits": _hits_inputs,
    "graph": _graph_inputs,
}


def model_inputs(view: str, hits: pd.DataFrame, cells: pd.DataFrame | None = None) -> dict:
    """The record of ``view`` for one event's hits (and cells) without truth: what the model
    reads. Training records are built from the same function and add their truth fields, so
    raw files (convert.py, ``model.predict``) reach the model exactly as training events do."""
    if view not in VIEW_INPUTS:
        raise ConfigError(f"the view '{view}' needs truth: no model inputs from hits alone")
    return VIEW_INPUTS[view](hits, cells)


# -- view records: what is cached per (sub-)event: the inputs plus truth -------------------------
def _event_hits_record(ev: SubEvent, options: Mapping) -> dict[str, dict]:
    record = _hits_inputs(ev.hits, ev.cells)
    v = views.event_hits(ev.hits, ev.particles, ev.truth)
    record["hits"] |= {"targets": v["targets"], "particle_id": v["particle_id"]}
    return record


def _track_hits_record(ev: SubEvent, options: Mapping) -> dict[str, dict]:
    v = views.track_hits(
        ev.hits,
        ev.truth,
        ev.particles,
        max_len=options["max_track_length"],
        scale=1.0,
        min_hits=options["min_track_hits"],
    )
    keep = ("x", "mask", "hit_id", "volume_id", "layer_id", "particle_id", "lengths", "pt", "eta")
    return {"tracks": {k: v[k] for k in keep}}


def _hits_record(ev: SubEvent, options: Mapping) -> dict[str, dict]:
    record = _hits_inputs(ev.hits, ev.cells)
    record["hits"]["particle_id"] = views.hit_particles(ev.hits, ev.truth)
    return record


def _graph_record(ev: SubEvent, options: Mapping) -> dict[str, dict]:
    record = _graph_inputs(ev.hits, ev.cells)
    record["nodes"]["particle_id"] = views.hit_particles(ev.hits, ev.truth)
    record["nodes"]["pt"] = views.particle_pt(ev.hits, ev.particles, ev.truth)
    record["truth_edges"] = {"edge": views.truth_graph(ev.hits, ev.truth, ev.particles).T.copy()}
    return record


VIEW_RECORDS: dict[str, Callable[[SubEvent, Mapping], dict[str, dict]]] = {
    "event_hits": _event_hits_record,
    "track_hits": _track_hits_record,
    "hits": _hits_record,
    "graph": _graph_record,
}


# -- datasets and collation ------------------------------------------------------------------
class EventDataset(Dataset):
    """One (sub-)event per item: the record of each store, as numpy arrays."""

    def __init__(self, stores: dict[str, RecordStore], event_ids: np.ndarray) -> None:
        self.stores = stores
        self.event_ids = event_ids

    def __len__(self) -> int:
        return len(self.event_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {name: store.record(i) for name, store in self.stores.items()}
        item["event_id"] = int(self.event_ids[i])
        return item


class RowDataset(Dataset):
    """One row (a track, a hit) per item; whole batches are fetched with one slice."""

    def __init__(self, store: RecordStore, columns: Sequence[str]) -> None:
        self.store = store
        self.columns = list(columns)

    def __len__(self) -> int:
        return self.store.num_rows

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict[str, np.ndarray]:
        idx = np.sort(np.asarray(indices))  # sorted reads are faster on memory maps
        return {c: np.asarray(self.store.column(c)[idx]) for c in self.columns}


class EventHitsCollate:
    """Pad events to the longest in the batch: x/coord_scale, mask, ids, and the targets y
    when the records have them (records of hits alone, for inference, have not)."""

    def __init__(self, coord_scale: float) -> None:
        self.coord_scale = coord_scale

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(it["hits"]["x"]) for it in items)
        b = len(items)
        with_truth = all("targets" in it["hits"] for it in items)
        x = np.zeros((b, n, 3), np.float32)
        y = np.zeros((b, n, 4), np.float32)
        mask = np.zeros((b, n), bool)
        pid = np.full((b, n), -1, np.int64)
        hid = np.full((b, n), -1, np.int64)
        for i, it in enumerate(items):
            h = it["hits"]
            k = len(h["x"])
            x[i, :k] = h["x"] / self.coord_scale
            mask[i, :k] = True
            hid[i, :k] = h["hit_id"]
            if with_truth:
                y[i, :k] = h["targets"]
                pid[i, :k] = h["particle_id"]
        batch = {
            "x": torch.from_numpy(x),
            "mask": torch.from_numpy(mask),
            "hit_id": torch.from_numpy(hid),
            "event_id": torch.tensor([it["event_id"] for it in items], dtype=torch.int64),
        }
        if with_truth:
            batch["y"] = torch.from_numpy(y)
            batch["particle_id"] = torch.from_numpy(pid)
        return batch


class RowCollate:
    """Rows fetched by ``RowDataset.__getitems__`` -> tensors, positions divided by ``scale``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()}
        out["x"] = out["x"] / self.scale
        return out


#: per-node arrays of the graph view
GRAPH_NODE_KEYS = (
    "features",
    "x",
    "hit_id",
    "particle_id",
    "volume_id",
    "layer_id",
    "module_id",
    "pt",
)


class GraphCollate:
    """Events as graphs; several events are joined into one disconnected graph."""

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        offset, parts = 0, []
        for it in items:
            nodes = it["nodes"]
            parts.append(
                (nodes, it["truth_edges"]["edge"] + offset, it["event_id"], len(nodes["x"]))
            )
            offset += len(nodes["x"])
        out = {
            key: torch.from_numpy(np.concatenate([p[0][key] for p in parts]))
            for key in GRAPH_NODE_KEYS
        }
        out["truth_edges"] = torch.from_numpy(np.concatenate([p[1] for p in parts]).T.copy())
        out["event_id"] = torch.tensor([p[2] for p in parts], dtype=torch.int64)
        out["batch"] = torch.repeat_interleave(
            torch.arange(len(parts)), torch.tensor([p[3] for p in parts])
        )
        return out


# -- the data module ---------------------------------------------------------------------------
class TrackMLDataModule(HEPDataModule):
    """TrackML events, simulated (``source: simulate``) or from a directory of real events.

    ``particles_per_event: [a, b]`` draws sub-events of a..b particles (uniform count, random
    particles) from every source event, ``subevents_per_event`` times; ``null`` keeps whole
    events. ``selection`` (volumes, pt_min, min_hits) applies to the source events first.
    """

    views = {
        "event_hits": "per (sub-)event: hit positions with per-hit targets theta, sin phi, cos phi, q",
        "track_hits": "per particle: its hits ordered by distance from the origin, padded",
        "hits": "single hits (x, y, z) with their ids",
        "graph": "per event: node features, truth edges, hit/particle/module ids, particle pT",
    }

    def __init__(
        self,
        view: str,
        source: str = "simulate",
        data_dir: str = "data/trackml",
        simulation: Mapping[str, Any] | None = None,
        splits: Mapping[str, float] | None = None,
        max_events: int | None = None,
        particles_per_event: Sequence[int] | int | None = (10, 50),
        subevents_per_event: Mapping[str, int] | int = 10,
        noise: bool = False,
        selection: Mapping[str, Any] | None = None,
        use_cells: bool = False,
        coord_scale: float = 1000.0,
        max_track_length: int = 32,
        min_track_hits: int = 6,
        num_features: int = 3,
        num_targets: int = 4,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        prepare_workers: int = -1,
    ) -> None:
        super().__init__(view, batch_size, num_workers, pin_memory, seed)
        resolve_workers(
            prepare_workers, "data.prepare_workers"
        )  # a clear error now rather than at preparation
        self.prepare_workers = prepare_workers
        self.source = source
        self._source_path: Path | None = None
        self._held: tuple[tuple[str, int], dict[int, SubEvent]] | None = None  # see event()
        self.data_dir = Path(data_dir)
        self.simulation = {"n_events": 40, "n_particles": 2000, "seed": 1, "options": {}}
        self.simulation.update(simulation or {})
        self.splits = dict(splits or {"train": 0.8, "val": 0.1, "test": 0.1})
        if set(self.splits) != set(SPLITS) or any(f < 0 for f in self.splits.values()):
            raise ConfigError(
                f"data.splits needs non-negative fractions for {SPLITS}, got {self.splits}"
            )
        self.max_events = max_events
        if isinstance(particles_per_event, int):
            particles_per_event = (particles_per_event, particles_per_event)
        self.particles_per_event = tuple(particles_per_event) if particles_per_event else None
        if isinstance(subevents_per_event, int):
            subevents_per_event = {s: subevents_per_event for s in SPLITS}
        self.subevents_per_event = {s: int(subevents_per_event.get(s, 1)) for s in SPLITS}
        if max(self.subevents_per_event.values()) >= SUBEVENT_STRIDE:
            raise ConfigError(f"data.subevents_per_event must be < {SUBEVENT_STRIDE}")
        self.noise = noise
        self.selection = dict(selection or {})
        unknown = set(self.selection) - {"volumes", "pt_min", "min_hits"}
        if unknown:
            raise ConfigError(
                f"data.selection: unknown keys {sorted(unknown)}; use volumes, pt_min, min_hits"
            )
        self.use_cells = use_cells
        self.coord_scale = coord_scale
        self.view_options = {"max_track_length": max_track_length, "min_track_hits": min_track_hits}
        self.num_features = num_features
        self.num_targets = num_targets

    # -- source events ---------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        return ("hits", "particles", "truth") + (("cells",) if self.use_cells else ())

    def source_dir(self) -> Path:
        """Directory of the source events; simulated events are generated here once (and
        checked once per data module: every later call returns the same directory)."""
        if self._source_path is None:
            self._source_path = self._resolve_source()
        return self._source_path

    def _resolve_source(self) -> Path:
        if self.source != "simulate":
            path = Path(self.source)
            if not path.is_dir():
                raise DataError(
                    path,
                    None,
                    "data.source is neither 'simulate' nor a directory of TrackML events",
                )
            return path
        from hepexp.data.trackml.simulate import ensure_simulated

        sim = self.simulation
        key = _digest(sim)
        return ensure_simulated(
            self.data_dir / "simulated" / key,
            sim["n_events"],
            sim["n_particles"],
            sim["seed"],
            workers=self.prepare_workers,
            **sim["options"],
        )

    def source_events(self, split: str) -> list[int]:
        """Ids of the source events of ``split`` (disjoint splits, in id order)."""
        ids = list_events(self.source_dir(), self.parts)
        if not ids:
            raise DataError(self.source_dir(), None, f"no TrackML events with parts {self.parts}")
        if self.max_events is not None:
            ids = ids[: self.max_events]
        total = sum(self.splits.values())
        bounds = np.cumsum([0.0] + [self.splits[s] / total for s in SPLITS])
        cuts = np.round(bounds * len(ids)).astype(int)
        i = SPLITS.index(split)
        return ids[cuts[i] : cuts[i + 1]]

    def events(self, split: str) -> Iterator[tuple[int, SubEvent]]:
        """The (sub-)events of ``split`` as frames, exactly those the view's dataset holds."""
        for source_id in self.source_events(split):
            yield from self.source_subevents(split, source_id)

    # -- raw files (convert.py): read and cut as the source events ----------------------------
    def raw_events(self, path: str | Path) -> list[tuple[int, Path]]:
        """``(event_id, prefix)`` of the raw TrackML events at ``path``: a directory of events
        or one event's prefix (``dir/event000000001``). Only hits (and cells when the data
        uses them) are needed."""
        path = Path(path)
        parts = self.input_parts
        if path.is_dir():
            events = [(i, event_prefix(path, i)) for i in list_events(path, parts)]
            if not events:
                raise DataError(path, None, f"no TrackML events with parts {parts}")
            return events
        name = path.name
        if not (name.startswith("event") and name[5:].isdigit()):
            raise DataError(
                path, None, "expected a directory of events or an event prefix 'eventNNNNNNNNN'"
            )
        return [(int(name[5:]), path)]

    @property
    def input_parts(self) -> tuple[str, ...]:
        """The files of an event the model reads: hits, and cells for data.use_cells."""
        return ("hits", "cells") if self.use_cells else ("hits",)

    def read_raw_event(self, prefix: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """One raw event's hits (and cells, else None), read as the source events are, with the
        selection's volume cut (its particle cuts need truth)."""
        frames = dict(zip(self.input_parts, load_event(prefix, self.input_parts), strict=True))
        hits, cells = frames["hits"], frames.get("cells")
        volumes = self.selection.get("volumes")
        if volumes is not None:
            hits = hits[hits["volume_id"].isin(list(volumes))].reset_index(drop=True)
            if cells is not None:
                cells = cells[cells["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
        return hits, cells

    def model_inputs(self, hits: pd.DataFrame, cells: pd.DataFrame | None = None) -> dict:
        """:func:`model_inputs` of this data module's view."""
        return model_inputs(self.view, hits, cells)

    def event(self, split: str, event_id: int) -> SubEvent:
        """The frames of (sub-)event ``event_id`` of ``split``: truth looked up by id, so that
        predictions may arrive in any order. The sub-events of the last source event read are
        held, so reading a split's events in id order loads each source event once."""
        source_id = int(event_id) // SUBEVENT_STRIDE
        if self._held is None or self._held[0] != (split, source_id):
            if source_id not in self.source_events(split):
                raise DataError(self.source_dir(), None, f"split '{split}' has no event {event_id}")
            self._held = ((split, source_id), dict(self.source_subevents(split, source_id)))
        subevents = self._held[1]
        if int(event_id) not in subevents:
            raise DataError(self.source_dir(), None, f"split '{split}' has no event {event_id}")
        return subevents[int(event_id)]

    def source_subevents(self, split: str, source_id: int) -> list[tuple[int, SubEvent]]:
        """The (sub-)events of ``split`` drawn from source event ``source_id``, with their ids.

        Each source event has its own random stream, so source events can be processed in any
        order or in parallel and give the same sub-events."""
        frames = dict(
            zip(
                self.parts,
                load_event(event_prefix(self.source_dir(), source_id), self.parts),
                strict=True,
            )
        )
        event = select(
            frames["hits"],
            frames["particles"],
            frames["truth"],
            remove_noise=not self.noise,
            cells=frames.get("cells"),
            **self.selection,
        )
        if self.particles_per_event is None:
            return [(source_id * SUBEVENT_STRIDE, event)]
        rng = np.random.default_rng([self.seed, SPLITS.index(split), source_id])
        return [
            (
                source_id * SUBEVENT_STRIDE + k,
                sample_subevent(
                    event.hits,
                    event.particles,
                    event.truth,
                    self._draw_count(event, rng),
                    rng,
                    keep_noise=self.noise,
                    cells=event.cells,
                ),
            )
            for k in range(self.subevents_per_event[split])
        ]

    def _draw_count(self, event: SubEvent, rng: np.random.Generator) -> int:
        lo, hi = self.particles_per_event
        available = int(np.unique(event.truth.particle_id[event.truth.particle_id != 0]).size)
        if available < lo:
            raise DataError(
                self.source_dir(),
                "particle_id",
                f"an event has {available} particles after the selection, fewer than "
                f"particles_per_event[0]={lo}",
            )
        return int(rng.integers(lo, min(hi, available) + 1))

    # -- cache -------------------------------------------------------------------------------------
    def _cache_dir(self, split: str) -> Path:
        source = (
            {"simulation": self.simulation}
            if self.source == "simulate"
            else {"source": str(Path(self.source).resolve())}
        )
        key = _digest(
            {
                "version": CACHE_VERSION,
                **source,
                "splits": self.splits,
                "max_events": self.max_events,
                "particles_per_event": self.particles_per_event,
                "subevents": self.subevents_per_event,
                "noise": self.noise,
                "selection": self.selection,
                "seed": self.seed,
                "cells": self.use_cells,
                "view": self.view,
                "view_options": self.view_options,
            }
        )
        return self.data_dir / "cache" / key / split

    def _build_cache(self, split: str) -> Path:
        directory = self._cache_dir(split)
        if (directory / "done").exists():
            return directory
        self.source_dir()  # simulate first (in parallel itself); workers get the path
        writers: dict[str, RecordStoreWriter] = {}
        event_ids = []
        sources = self.source_events(split)
        job = partial(_view_records, self._detached(), split)
        desc = f"caching TrackML {split} ({self.view})"
        for records in ordered_map(job, sources, self.prepare_workers, desc=desc, unit="source"):
            for event_id, record in records:
                for name, arrays in record.items():
                    if name not in writers:
                        writers[name] = RecordStoreWriter(directory / name)
                    writers[name].append(arrays)
                event_ids.append(event_id)
        if not event_ids:
            raise ConfigError(
                f"the {split} split of data=trackml is empty: give it a larger share "
                f"in data.splits or more events (now {self.splits})"
            )
        for writer in writers.values():
            writer.close()
        np.save(directory / "event_ids.npy", np.asarray(event_ids, dtype=np.int64))
        (directory / "done").write_text("")
        return directory

    def _detached(self) -> TrackMLDataModule:
        """A copy holding only settings (no trainer, no datasets): cheap to send to workers."""
        dm = copy.copy(self)
        dm.trainer = None
        dm.datasets = {}
        return dm

    def prepare_data(self) -> None:
        for split in SPLITS:
            if self.splits[split] > 0:
                self._build_cache(split)

    def setup(self, stage: str | None = None) -> None:
        splits = ("train", "val") if stage == "fit" else SPLITS if stage is None else ("test",)
        for split in splits:
            if split in self.datasets or self.splits[split] == 0:
                continue
            directory = self._build_cache(split)
            stores = {p.name: RecordStore(p) for p in directory.iterdir() if p.is_dir()}
            event_ids = np.load(directory / "event_ids.npy")
            if self.view == "track_hits":
                columns = (
                    "x",
                    "mask",
                    "hit_id",
                    "volume_id",
                    "particle_id",
                    "lengths",
                    "pt",
                    "eta",
                )
                self.datasets[split] = RowDataset(stores["tracks"], columns)
            elif self.view == "hits":
                self.datasets[split] = RowDataset(
                    stores["hits"], ("x", "hit_id", "volume_id", "particle_id")
                )
            else:
                self.datasets[split] = EventDataset(stores, event_ids)

    def collate_fn(self) -> Callable:
        if self.view == "event_hits":
            return EventHitsCollate(self.coord_scale)
        if self.view == "graph":
            return GraphCollate()
        return RowCollate(self.coord_scale)

    def loader(self, split: str, shuffle: bool | None = None, **kwargs: Any):
        kwargs.setdefault("collate_fn", self.collate_fn())
        return super().loader(split, shuffle, **kwargs)


def _view_records(
    dm: TrackMLDataModule, split: str, source_id: int
) -> list[tuple[int, dict[str, dict]]]:
    """The cache records of the sub-events of one source event (run in worker processes)."""
    build = VIEW_RECORDS[dm.view]
    return [(i, build(ev, dm.view_options)) for i, ev in dm.source_subevents(split, source_id)]


def _digest(settings: Mapping) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
