"""hepexp: one Hydra-configured framework for machine learning in high-energy physics.

``hepexp.load_model(ckpt_path)`` returns a trained model; data sources live in
``hepexp.data.<source>``, metrics in ``hepexp.metrics`` (docs/api.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    # imported on first use: ``import hepexp`` stays fast (no torch, no Lightning)
    if name == "load_model":
        from hepexp.api import load_model

        return load_model
    raise AttributeError(f"module 'hepexp' has no attribute '{name}'")
