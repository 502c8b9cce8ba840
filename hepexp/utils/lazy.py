"""Names a package exports but imports only on first use (to keep ``import`` light)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from the module
    ``sources[name]`` when it is first asked for (e.g. a data module that needs torch)."""

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(sources[name]), name)

    return __getattr__
