"""Independent work items on several processes, results in input order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from joblib import Parallel, delayed
from tqdm.auto import tqdm

T = TypeVar("T")


def resolve_workers(workers: int, name: str = "workers") -> int:
    """``workers`` as a process count: >= 1 as given, -1 for all cores (``name`` for errors)."""
    if workers == 0 or workers < -1:
        raise ValueError(f"{name} must be >= 1 or -1 (all cores), got {workers}")
    return (os.cpu_count() or 1) if workers == -1 else workers


def ordered_map(
    func: Callable[..., T],
    items: Sequence[Any],
    workers: int = 1,
    desc: str | None = None,
    unit: str = "item",
) -> Iterator[T]:
    """Yield ``func(item)`` for each of ``items`` in order, computed by ``workers`` processes
    (-1: all cores; 1, or fewer than two items: this process), with a progress bar when
    ``desc`` is given. ``func`` must be picklable (a module-level function or partial)."""
    workers = min(resolve_workers(workers), len(items))
    results: Iterable[T]
    if workers <= 1:
        results = map(func, items)
    else:
        results = Parallel(n_jobs=workers, return_as="generator")(delayed(func)(it) for it in items)
    yield from tqdm(results, total=len(items), desc=desc, unit=unit, disable=desc is None)
