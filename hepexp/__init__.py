"""hepexp: one Hydra-configured framework for machine learning in high-energy physics.

``hepexp.load_model(ckpt_path)`` returns a trained model; data sources live in
``hepexp.data.<source>``, metrics in ``hepexp.metrics`` (docs/api.md).
"""

from __future__ import annotations

from hepexp.utils.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["load_model"]


# imported on first use: it needs torch (and Lightning)
__getattr__ = lazy_exports(__name__, {"load_model": "hepexp.api"})
