"""Generate-once caches for simulated datasets."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hepexp.utils.io import write_json

SETTINGS_FILE = "simulation.json"


def ensure_generated(
    out_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    generate: Callable[[Path], None],
    is_complete: Callable[[Path], bool] | None = None,
) -> Path:
    """Make ``out_dir`` hold data generated with ``settings``, generating only if needed.

    ``generate(tmp_dir)`` writes the files into a fresh temporary directory, which then replaces
    ``out_dir``; an interrupted generation never leaves a half-written dataset behind, and a
    directory generated with other settings (or failing ``is_complete``, e.g. after a user
    deleted files) is regenerated.
    """
    out_dir = Path(out_dir)
    wanted = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
    recorded = out_dir / SETTINGS_FILE
    matches = recorded.exists() and json.loads(recorded.read_text()) == wanted
    if matches and (is_complete is None or is_complete(out_dir)):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        generate(tmp)
        write_json(tmp / SETTINGS_FILE, wanted)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            os.replace(out_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
