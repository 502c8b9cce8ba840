"""Search spaces from Hydra's sweep syntax: ``choice``, ``interval``, ``range``, ``tag(log, ...)``.

``key: choice(a, b)`` or ``key: a,b``       categorical
``key: interval(lo, hi)``                   float in [lo, hi]
``key: tag(int, interval(lo, hi))``         int in [lo, hi]
``key: tag(log, interval(lo, hi))``         log-uniform
``key: range(start, stop[, step])``         ints (or floats) start, start+step, ... < stop
``key: value``                              fixed: passed to every trial unchanged
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hepexp.errors import ConfigError

_SCALARS = (type(None), bool, int, float, str)
_TAGS = {"log", "int"}


@dataclass(frozen=True)
class SearchParam:
    """One searched hyperparameter: its Optuna distribution and how to write a value back as
    a Hydra override (``labels``: the text the user wrote for each categorical choice)."""

    key: str
    distribution: BaseDistribution
    labels: tuple[str, ...] = ()

    def override(self, value: Any) -> str:
        """``key=value`` for the trial's command line."""
        if isinstance(self.distribution, CategoricalDistribution):
            return f"{self.key}={self.labels[int(self.distribution.to_internal_repr(value))]}"
        if isinstance(self.distribution, IntDistribution):
            return f"{self.key}={int(value)}"
        return f"{self.key}={float(value)!r}"

    def grid(self) -> list[Any]:
        """All values of a discrete parameter (for the grid sampler)."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high + 1, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            return [dist.low + i * dist.step for i in range(n + 1)]
        raise ConfigError(
            f"hydra.sweeper.params.{self.key}: the grid sampler needs choice(...) or range(...), "
            "not a continuous interval"
        )


def _distribution(override: Override) -> SearchParam:
    key = override.get_key_element()
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()))
    if tags - _TAGS:
        raise ConfigError(f"{key}: unknown tags {sorted(tags - _TAGS)}; known: {sorted(_TAGS)}")
    log = "log" in tags
    if isinstance(sweep, ChoiceSweep):
        values = list(override.sweep_iterator(transformer=Transformer.identity))
        texts = list(override.sweep_string_iterator())
        choices = [v if isinstance(v, _SCALARS) else t for v, t in zip(values, texts, strict=True)]
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{key}: repeated values in {override.input_line}")
        return SearchParam(key, CategoricalDistribution(choices), tuple(texts))
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if all(isinstance(x, int) for x in (start, stop, step)):
            # Hydra's range excludes stop; Optuna's high is inclusive
            high = start + ((stop - 1 - start) // step) * step
            if high < start:
                raise ConfigError(f"{key}: empty {override.input_line}")
            if log and step != 1:
                raise ConfigError(f"{key}: a log range needs step 1")
            return SearchParam(key, IntDistribution(start, high, log=log, step=step))
        n = int((float(stop) - float(start)) / float(step) - 1e-9)
        high = float(start) + n * float(step)
        return SearchParam(key, FloatDistribution(float(start), high, step=float(step)))
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{key}: interval needs low < high, got {override.input_line}")
        if "int" in tags:
            return SearchParam(key, IntDistribution(int(low), int(high), log=log))
        return SearchParam(key, FloatDistribution(float(low), float(high), log=log))
    raise ConfigError(f"{key}: unsupported sweep {override.input_line}")


def parse_search_space(
    arguments: Iterable[str], parser: OverridesParser | None = None
) -> tuple[dict[str, SearchParam], list[str]]:
    """Split ``key=value`` strings into searched parameters and fixed overrides.

    Later arguments for the same key win (command line over ``hydra.sweeper.params``).
    """
    parser = parser or OverridesParser.create()
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(list(arguments)):
        by_key[override.get_key_element()] = override
    params: dict[str, SearchParam] = {}
    fixed: list[str] = []
    for key, override in by_key.items():
        if override.is_sweep_override():
            params[key] = _distribution(override)
        else:
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    return params, fixed
