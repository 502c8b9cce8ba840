"""Prometheus neutrino-telescope events (IceCube): Parquet I/O, a built-in simulator writing the
same format, and the per-OM timing-histogram pre-processing used by om2vec."""

from hepexp.data.prometheus.io import (
    EventWriter,
    PrometheusFormatError,
    iter_events,
    read_config,
    read_events,
    read_geometry,
    write_events,
    write_geometry,
)

__all__ = [
    "EventWriter",
    "PrometheusFormatError",
    "iter_events",
    "read_config",
    "read_events",
    "read_geometry",
    "write_events",
    "write_geometry",
]
