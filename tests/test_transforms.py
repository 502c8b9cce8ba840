"""Normalisations declared in config invert exactly and persist their fitted statistics."""

from __future__ import annotations

import pytest
import torch

from hepexp.data.transforms import FeatureTransform
from hepexp.errors import ConfigError

JETS_SPEC = [
    {"name": "m", "fn": "log10", "offset": 1.0, "loc": 0.0, "scale": 1.8},
    {"name": "pt", "fn": "log10", "loc": 1.3, "scale": 1.2},
    {"name": "phi", "scale": 3.0},
    {"name": "eta", "scale": 5.0},
]


def _jets(n: int = 1000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.stack(
        [
            torch.rand(n, generator=g) * 50 - 0.5,
            20 + torch.rand(n, generator=g) * 500,
            torch.rand(n, generator=g) * 6 - 3,
            torch.rand(n, generator=g) * 9 - 4.5,
        ],
        dim=1,
    ).double()


def test_fixed_transform_values_and_inverse() -> None:
    t = FeatureTransform(["m", "pt", "phi", "eta"], JETS_SPEC)
    x = _jets()
    y = t(x)
    torch.testing.assert_close(y[:, 1], (torch.log10(x[:, 1]) - 1.3) / 1.2)
    torch.testing.assert_close(y[:, 0], torch.log10(x[:, 0] + 1) / 1.8)
    torch.testing.assert_close(t.inverse(y), x)


def test_fitted_min_max_persists_in_state_dict() -> None:
    spec = [{"name": f, "loc": "min", "scale": "range"} for f in ("a", "b")]
    t = FeatureTransform(["a", "b"], spec)
    x = torch.tensor([[1.0, -2.0], [3.0, 6.0], [2.0, 0.0]])
    with pytest.raises(RuntimeError, match="never fitted"):
        t(x)
    t.fit(x)
    y = t(x)
    assert y.min().item() == 0.0 and y.max().item() == 1.0
    fresh = FeatureTransform(["a", "b"], spec)
    fresh.load_state_dict(t.state_dict())
    torch.testing.assert_close(fresh(x), y)
    torch.testing.assert_close(fresh.inverse(y), x)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"name": "zz"}], "not a feature"),
        ([{"name": "a", "fn": "sqrt"}], "fn 'sqrt'"),
        ([{"name": "a", "loc": "mode"}], "loc 'mode'"),
        ([{"name": "a", "scale": 0}], "scale must not be 0"),
        ([{"name": "a", "shift": 1}], "unknown"),
    ],
)
def test_bad_specs(spec: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FeatureTransform(["a"], spec)
