"""Locating the small real Prometheus files in ../shared (absent: skip, or fail under CI)."""

from __future__ import annotations

from pathlib import Path

from .conftest import SHARED as SHARED
from .conftest import require

REAL_EVENTS = SHARED / "data" / "prometheus" / "example_photons.parquet"
REAL_GEO = SHARED / "data" / "prometheus" / "icecube.geo"


def real_events_path() -> Path:
    """The 10 real Prometheus events (absent: see :func:`require`)."""
    require(REAL_EVENTS.exists(), f"real Prometheus example not found at {REAL_EVENTS}")
    return REAL_EVENTS


def real_geo_path() -> Path:
    """The real IceCube .geo file (absent: see :func:`require`)."""
    require(REAL_GEO.exists(), f"IceCube geometry not found at {REAL_GEO}")
    return REAL_GEO
