"""Default values read from a signature, so that a settings dict cannot drift from its class."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def keyword_defaults(fn: Callable) -> dict[str, Any]:
    """``{name: default}`` of every parameter of ``fn`` (a class: its ``__init__``) that has one."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
