"""Tracking metrics of any tracker, in one place: the TrackML score, the DM / perfect / LHC
efficiencies with fake and duplicate rates per pT threshold, and the matched-particle table of
the efficiency plots. Truth is looked up by event id, so that a tracker's events may arrive in
any order (from a loader, a prediction loop or a file)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hepexp.data.trackml.subevents import SubEvent
from hepexp.metrics.trackml import (
    aggregate_efficiencies,
    efficiencies,
    match_particles,
    score_event,
)

#: the per-threshold figures a summary holds (besides n_particles)
TRACK_FIGURES = ("double_majority", "perfect", "lhc", "fake_rate", "duplicate_rate")


class TrackingEvaluation:
    """Collects the tracks of one or more track builders event by event.

    ``truth_of(event_id)`` gives an event's frames (hits, particles, truth), e.g.
    ``functools.partial(datamodule.event, "test")``; ``pt_mins`` are the thresholds of the
    efficiencies (0: every reconstructable particle).
    """

    def __init__(self, truth_of: Callable[[int], SubEvent], pt_mins: Sequence[float]) -> None:
        self.truth_of = truth_of
        self.pt_mins = tuple(pt_mins)
        self._scores: dict[str, list[float]] = defaultdict(list)
        self._efficiencies: dict[tuple[str, float], list[dict]] = defaultdict(list)
        self._particles: dict[str, list[pd.DataFrame]] = defaultdict(list)

    def add(
        self,
        event_id: int,
        hit_id: np.ndarray,
        track_id: np.ndarray,
        builder: str = "tracks",
    ) -> float:
        """Score one event's tracks (``track_id`` per hit, -1: in no track); returns its
        TrackML score."""
        event = self.truth_of(int(event_id))
        sub = pd.DataFrame({"hit_id": hit_id, "track_id": track_id})
        score = score_event(event.truth, sub, unassigned=-1)
        self._scores[builder].append(score)
        for pt_min in self.pt_mins:
            self._efficiencies[builder, pt_min].append(
                efficiencies(event.truth, event.particles, sub, pt_min=pt_min, hits=event.hits)
            )
        self._particles[builder].append(
            match_particles(event.truth, event.particles, sub, hits=event.hits)
        )
        return score

    @property
    def builders(self) -> list[str]:
        return list(self._scores)

    def scores(self, builder: str = "tracks") -> list[float]:
        """The per-event TrackML scores of ``builder``, in the order the events were added."""
        return list(self._scores[builder])

    def summary(self, builder: str = "tracks") -> dict:
        """``n_events``, ``trackml_score`` (mean over events, NaN-free) and its ``_std``, and per
        threshold ``pt_min`` the aggregated :data:`TRACK_FIGURES` and ``n_particles``."""
        scores = self._scores[builder]
        if not scores:
            raise ValueError(f"no events were added for track builder '{builder}'")
        out: dict = {
            "n_events": len(scores),
            "trackml_score": float(np.nanmean(scores)),
            "trackml_score_std": float(np.nanstd(scores)),
        }
        for pt_min in self.pt_mins:
            agg = aggregate_efficiencies(self._efficiencies[builder, pt_min])
            out[pt_min] = {k: agg[k] for k in (*TRACK_FIGURES, "n_particles")}
        return out

    def particles(self, builder: str = "tracks") -> pd.DataFrame:
        """The matched-particle table of every event (for efficiency plots)."""
        return pd.concat(self._particles[builder], ignore_index=True)
