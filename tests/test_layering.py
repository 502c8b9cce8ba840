"""Imports point down: run -> models -> reco / nn / data / metrics -> errors (lazy imports
inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hepexp"

#: layer -> the hepexp layers it must not import
FORBIDDEN = {
    "nn": ("run", "models", "reco", "data", "metrics", "plotting"),
    "metrics": ("run", "models", "reco"),
    "data": ("run", "models", "reco"),
    "reco": ("run", "models"),
    "models": ("run",),
    "checkpoint": ("run", "models"),
}


def _hepexp_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("hepexp.")}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py")) or [PACKAGE / f"{layer}.py"]
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files
        for module in _hepexp_imports(path)
        if module.split(".")[1] in FORBIDDEN[layer]
    }
    assert not wrong, sorted(wrong)
