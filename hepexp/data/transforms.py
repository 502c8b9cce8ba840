"""Per-feature normalisations and their inverses, declared in the data config.

Each feature gets ``y = (f(x + offset) - loc) / scale`` with ``f`` one of ``identity``, ``log10``
or ``log``. ``loc`` and ``scale`` are numbers, or names of statistics fitted on the training data:
``loc: min | mean | median``, ``scale: range | std | iqr``. Fitted values live in buffers and are
saved with the model, so evaluation and conversion apply exactly the training transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hepexp.errors import ConfigError

_FUNCTIONS = ("identity", "log10", "log")
_FITTED_LOC = ("min", "mean", "median")
_FITTED_SCALE = ("range", "std", "iqr")


class FeatureTransform(nn.Module):
    """Invertible element-wise normalisation of the last axis of a tensor."""

    def __init__(self, features: Sequence[str], transforms: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        self.features = list(features)
        by_name = {}
        for spec in transforms:
            unknown = set(spec) - {"name", "fn", "offset", "loc", "scale"}
            if "name" not in spec or unknown:
                raise ConfigError(
                    f"transform {dict(spec)}: expected keys name, fn, offset, loc, scale"
                    + (f"; unknown: {sorted(unknown)}" if unknown else "")
                )
            if spec["name"] not in self.features:
                raise ConfigError(
                    f"transform for '{spec['name']}', which is not a feature ({self.features})"
                )
            by_name[spec["name"]] = spec
        self.fns: list[str] = []
        self.fit_loc: list[str | None] = []
        self.fit_scale: list[str | None] = []
        offset, loc, scale = [], [], []
        for name in self.features:
            spec = by_name.get(name, {})
            fn = spec.get("fn", "identity")
            if fn not in _FUNCTIONS:
                raise ConfigError(f"transform of '{name}': fn '{fn}' is not one of {_FUNCTIONS}")
            self.fns.append(fn)
            offset.append(float(spec.get("offset", 0.0)))
            loc_value, self_loc = _number_or_stat(name, "loc", spec.get("loc", 0.0), _FITTED_LOC)
            scale_value, self_scale = _number_or_stat(
                name, "scale", spec.get("scale", 1.0), _FITTED_SCALE
            )
            if self_scale is None and scale_value == 0:
                raise ConfigError(f"transform of '{name}': scale must not be 0")
            loc.append(loc_value)
            scale.append(scale_value)
            self.fit_loc.append(self_loc)
            self.fit_scale.append(self_scale)
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float64))
        self.register_buffer("loc", torch.tensor(loc, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(not self.needs_fit_stats))
        is_log10 = torch.tensor([fn == "log10" for fn in self.fns])
        is_log = torch.tensor([fn == "log" for fn in self.fns])
        self.register_buffer("is_log10", is_log10, persistent=False)
        self.register_buffer("is_log", is_log, persistent=False)

    @property
    def needs_fit_stats(self) -> bool:
        return any(s is not None for s in self.fit_loc + self.fit_scale)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def _apply_fn(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.offset.to(x.dtype)
        if not (self.is_log10.any() or self.is_log.any()):
            return x
        safe = x.clamp_min(torch.finfo(x.dtype).tiny)
        x = torch.where(self.is_log10, torch.log10(safe), x)
        return torch.where(self.is_log, torch.log(safe), x)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Fit the statistics named in the config on raw training inputs ``x`` (N, F)."""
        f = self._apply_fn(x.to(torch.float64).reshape(-1, len(self.features)))
        for i in range(len(self.features)):
            col = f[:, i]
            if self.fit_loc[i] == "min":
                self.loc[i] = col.min()
            elif self.fit_loc[i] == "mean":
                self.loc[i] = col.mean()
            elif self.fit_loc[i] == "median":
                self.loc[i] = col.median()
            if self.fit_scale[i] == "range":
                self.scale[i] = col.max() - col.min()
            elif self.fit_scale[i] == "std":
                self.scale[i] = col.std()
            elif self.fit_scale[i] == "iqr":
                q = torch.quantile(col, torch.tensor([0.25, 0.75], dtype=col.dtype))
                self.scale[i] = q[1] - q[0]
            if self.scale[i] == 0:
                self.scale[i] = 1.0
        self.fitted.fill_(True)

    def _check(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "FeatureTransform has fitted statistics that were never fitted; call fit() "
                "on training data first"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw physical features -> normalised features (same dtype as ``x``)."""
        self._check()
        dtype = x.dtype
        y = (self._apply_fn(x.to(torch.float64)) - self.loc) / self.scale
        return y.to(dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised features -> raw physical features."""
        self._check()
        dtype = y.dtype
        f = y.to(torch.float64) * self.scale + self.loc
        f = torch.where(self.is_log10, torch.pow(10.0, f), f)
        f = torch.where(self.is_log, torch.exp(f), f)
        return (f - self.offset).to(dtype)


def _number_or_stat(
    name: str, key: str, value: Any, allowed: tuple[str, ...]
) -> tuple[float, str | None]:
    if isinstance(value, str):
        if value not in allowed:
            raise ConfigError(
                f"transform of '{name}': {key} '{value}' is not a number or {allowed}"
            )
        return (0.0 if key == "loc" else 1.0), value
    return float(value), None
