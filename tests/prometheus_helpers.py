"""Locating the small real Prometheus files in ../shared (tests skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import SHARED as SHARED

REAL_EVENTS = SHARED / "data" / "prometheus" / "example_photons.parquet"
REAL_GEO = SHARED / "data" / "prometheus" / "icecube.geo"


def real_events_path() -> Path:
    """The 10 real Prometheus events (skips the test when absent)."""
    if not REAL_EVENTS.exists():
        pytest.skip(f"real Prometheus example not found at {REAL_EVENTS} (set HEPEXP_SHARED)")
    return REAL_EVENTS


def real_geo_path() -> Path:
    """The real IceCube .geo file (skips the test when absent)."""
    if not REAL_GEO.exists():
        pytest.skip(f"IceCube geometry not found at {REAL_GEO} (set HEPEXP_SHARED)")
    return REAL_GEO
