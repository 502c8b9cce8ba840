"""Toy TrackML events (helices in a barrel) and a small data module serving ``event_hits``.

Independent of the project's simulator: lets the regressor's tests run in seconds with
learnable tracks and real TrackML frames (hits, particles, truth with phase-2 weights).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hepexp.data.base import HEPDataModule
from hepexp.data.trackml.subevents import SubEvent
from hepexp.data.trackml.views import event_hits
from hepexp.metrics.trackml import hit_weights

RADII = np.array([32, 72, 116, 172, 260, 360, 500, 660, 820, 1020], dtype=float)
VOLUMES = np.array([8, 8, 8, 8, 13, 13, 13, 13, 17, 17])
LAYERS = np.array([2, 4, 6, 8, 2, 4, 6, 8, 2, 4])


def toy_event(
    rng: np.random.Generator, n_particles: int, noise: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(hits, particles, truth) of ``n_particles`` helices (2 T field) crossing barrel layers."""
    pt = 0.5 + rng.exponential(1.0, n_particles)
    eta = rng.uniform(-1.2, 1.2, n_particles)
    phi = rng.uniform(-np.pi, np.pi, n_particles)
    q = rng.choice([-1.0, 1.0], n_particles)
    vz = rng.normal(0.0, 30.0, n_particles)
    radius = pt * 1000.0 / 0.6  # mm, R = pT / (0.3 B) with B = 2 T
    turn = np.arcsin(np.clip(RADII[None] / (2 * radius[:, None]), -1, 1))
    hit_phi = phi[:, None] - q[:, None] * turn
    z = vz[:, None] + 2 * radius[:, None] * turn * np.sinh(eta)[:, None]
    keep = np.abs(z) < 1000.0
    p_idx, l_idx = np.nonzero(keep)
    n = len(p_idx)
    r = RADII[l_idx]
    x = r * np.cos(hit_phi[p_idx, l_idx]) + rng.normal(0, 0.05, n)
    y = r * np.sin(hit_phi[p_idx, l_idx]) + rng.normal(0, 0.05, n)
    zz = z[p_idx, l_idx] + rng.normal(0, 0.1, n)
    pid = (np.arange(1, n_particles + 1, dtype=np.int64) << 36)[p_idx]
    if noise:
        nr = rng.choice(RADII, noise)
        nphi = rng.uniform(-np.pi, np.pi, noise)
        x = np.concatenate([x, nr * np.cos(nphi)])
        y = np.concatenate([y, nr * np.sin(nphi)])
        zz = np.concatenate([zz, rng.uniform(-1000, 1000, noise)])
        pid = np.concatenate([pid, np.zeros(noise, np.int64)])
        l_idx = np.concatenate([l_idx, rng.integers(0, len(RADII), noise)])
    order = rng.permutation(len(pid))
    x, y, zz, pid, l_idx = x[order], y[order], zz[order], pid[order], l_idx[order]
    hit_id = np.arange(1, len(pid) + 1, dtype=np.int64)
    hits = pd.DataFrame(
        {
            "hit_id": hit_id,
            "x": x,
            "y": y,
            "z": zz,
            "volume_id": VOLUMES[l_idx],
            "layer_id": LAYERS[l_idx],
            "module_id": np.ones(len(pid), np.int64),
        }
    )
    pids = np.arange(1, n_particles + 1, dtype=np.int64) << 36
    particles = pd.DataFrame(
        {
            "particle_id": pids,
            "particle_type": np.where(q > 0, 211, -211),
            "vx": np.zeros(n_particles),
            "vy": np.zeros(n_particles),
            "vz": vz,
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": pt * np.sinh(eta),
            "q": q.astype(np.int64),
            "nhits": np.bincount(p_idx, minlength=n_particles).astype(np.int64),
        }
    )
    truth = pd.DataFrame(
        {"hit_id": hit_id, "particle_id": pid, "tx": x, "ty": y, "tz": zz, "weight": 0.0}
    )
    for c in ("tpx", "tpy", "tpz"):
        truth[c] = 0.0
    truth["weight"] = hit_weights(truth, particles)
    return hits, particles, truth


class ToyEvents(Dataset):
    """``event_hits`` samples of toy events (one dict of numpy arrays per event)."""

    def __init__(self, frames: list[tuple[int, pd.DataFrame, pd.DataFrame, pd.DataFrame]], scale):
        self.frames = frames
        self.samples = []
        for event_id, hits, particles, truth in frames:
            view = event_hits(hits, particles, truth)
            self.samples.append(
                {
                    "x": view["x"] / scale,
                    "y": view["targets"],
                    "particle_id": view["particle_id"],
                    "hit_id": view["hit_id"],
                    "event_id": event_id,
                }
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


def pad_collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of ``event_hits`` samples to the longest (the batch contract)."""
    n = max(len(s["x"]) for s in samples)
    b = len(samples)
    out = {
        "x": torch.zeros(b, n, 3),
        "y": torch.zeros(b, n, 4),
        "mask": torch.zeros(b, n, dtype=torch.bool),
        "particle_id": torch.full((b, n), -1, dtype=torch.int64),
        "hit_id": torch.full((b, n), -1, dtype=torch.int64),
        "event_id": torch.tensor([s["event_id"] for s in samples], dtype=torch.int64),
    }
    for i, s in enumerate(samples):
        k = len(s["x"])
        out["x"][i, :k] = torch.from_numpy(s["x"])
        out["y"][i, :k] = torch.from_numpy(s["y"])
        out["mask"][i, :k] = True
        out["particle_id"][i, :k] = torch.from_numpy(s["particle_id"])
        out["hit_id"][i, :k] = torch.from_numpy(s["hit_id"])
    return out


class ToyTrackMLData(HEPDataModule):
    """A data module with the TrackMLDataModule interface over in-memory toy events."""

    views = {"event_hits": "hits of an event with per-hit track parameters"}
    num_features = 3
    num_targets = 4

    def __init__(
        self,
        n_events: tuple[int, int, int] = (256, 64, 64),
        particles: tuple[int, int] = (10, 50),
        noise: int = 0,
        coord_scale: float = 1000.0,
        batch_size: int = 16,
        seed: int = 0,
        view: str = "event_hits",
    ) -> None:
        super().__init__(view=view, batch_size=batch_size, seed=seed)
        self.coord_scale = coord_scale
        rng = np.random.default_rng(seed)
        event_id = 1000
        self.frames: dict[str, list] = {}
        for split, n in zip(("train", "val", "test"), n_events, strict=True):
            self.frames[split] = []
            for _ in range(n):
                k = int(rng.integers(particles[0], particles[1] + 1))
                self.frames[split].append((event_id, *toy_event(rng, k, noise)))
                event_id += 1

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                self.datasets[split] = ToyEvents(self.frames[split], self.coord_scale)

    def loader(self, split: str, shuffle: bool | None = None, **kwargs):
        return super().loader(split, shuffle, collate_fn=pad_collate, **kwargs)

    def events(self, split: str) -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
        yield from self.frames[split]

    def event(self, split: str, event_id: int) -> SubEvent:
        """The frames of toy event ``event_id`` of ``split`` (as TrackMLDataModule.event)."""
        for eid, hits, particles, truth in self.frames[split]:
            if eid == event_id:
                return SubEvent(hits, particles, truth)
        raise KeyError(f"split '{split}' has no event {event_id}")
