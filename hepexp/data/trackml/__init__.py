"""TrackML: reader/writer of the official CSV format, simulator, detector geometry, sub-events
and the model views (:mod:`hepexp.data.trackml.views`)."""

from __future__ import annotations

from hepexp.data.trackml import views
from hepexp.data.trackml.geometry import Geometry, load_detectors, trackml_geometry
from hepexp.data.trackml.io import (
    PARTS,
    TrackMLFormatError,
    event_prefix,
    list_events,
    load_dataset,
    load_event,
    read_part,
    write_event,
)
from hepexp.data.trackml.simulate import (
    SimulationConfig,
    ensure_simulated,
    simulate_event,
)
from hepexp.data.trackml.subevents import SubEvent, sample_subevent, select
from hepexp.utils.lazy import lazy_exports

__all__ = [
    "PARTS",
    "Geometry",
    "SimulationConfig",
    "SubEvent",
    "TrackMLDataModule",
    "TrackMLFormatError",
    "ensure_simulated",
    "event_prefix",
    "list_events",
    "load_dataset",
    "load_detectors",
    "load_event",
    "read_part",
    "sample_subevent",
    "select",
    "simulate_event",
    "trackml_geometry",
    "views",
    "write_event",
]


# imported on first use: it needs torch (and Lightning)
__getattr__ = lazy_exports(__name__, {"TrackMLDataModule": "hepexp.data.trackml.datamodule"})
