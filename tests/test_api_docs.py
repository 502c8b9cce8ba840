"""docs/api.md runs as written: every ```python block, in order, in an empty directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from .conftest import ROOT

DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n\nz = 3\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n\nz = 3\n"]


def test_readme_links_the_api_page() -> None:
    assert "(docs/api.md)" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_every_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8, "the examples of docs/api.md"
    monkeypatch.chdir(tmp_path)
    for name in ("HEPEXP_DATA_DIR", "HEPEXP_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    GlobalHydra.instance().clear()
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"docs/api.md, python block {i}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"docs/api.md, python block {i} failed:\n{code}") from err
    assert (tmp_path / "runs" / "jet_ae" / "checkpoints" / "best.ckpt").exists()
