"""Exceptions that name what is wrong and where."""

from __future__ import annotations


class HepexpError(Exception):
    """Base class of every error hepexp raises on purpose."""


class ConfigError(HepexpError, ValueError):
    """A configuration that cannot work (impossible model/data pair, missing key, ...)."""


class DataError(HepexpError, ValueError):
    """Input data that cannot be used: names the file, the field and what was expected."""

    def __init__(self, path: object, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")
