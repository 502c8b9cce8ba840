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
from hepexp.data.prometheus.preprocess import (
    densify,
    om_batch,
    om_histograms,
    preprocess_events,
    read_timing_meta,
)
from hepexp.data.prometheus.simulate import (
    SimulationOptions,
    ensure_simulated,
    fit_light_model,
    icecube_geometry,
    simulate_events,
    simulate_photons,
)
from hepexp.utils.lazy import lazy_exports

__all__ = [
    "EventWriter",
    "PrometheusDataModule",
    "PrometheusFormatError",
    "SimulationOptions",
    "densify",
    "ensure_simulated",
    "fit_light_model",
    "icecube_geometry",
    "iter_events",
    "om_batch",
    "om_histograms",
    "preprocess_events",
    "read_config",
    "read_events",
    "read_geometry",
    "read_timing_meta",
    "simulate_events",
    "simulate_photons",
    "write_events",
    "write_geometry",
]


# imported on first use: it needs torch (and Lightning)
__getattr__ = lazy_exports(__name__, {"PrometheusDataModule": "hepexp.data.prometheus.datamodule"})
