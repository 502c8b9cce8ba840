"""Reading offline W&B runs (``wandb/offline-run-<time>-<id>/``) from their record log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path


def wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a W&B run log (``*.wandb``): a ``:W&B`` header, then 32 KiB blocks of
    records, each with a 7-byte header (crc32, length, type: full/first/middle/last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 or len(chunk) < length:  # the end, or a record still being written
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending


def _put(values: dict, item) -> None:
    """Store a summary/history item; nested keys (e.g. the fields of an image) as nested dicts."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        values = values.setdefault(part, {})
    values[path[-1]] = json.loads(item.value_json)


def wandb_run(run_dir: Path, wait_s: float = 30.0) -> dict:
    """Id, group, name, job type, config, summary, history rows, saved files and artifacts
    (type, name) of an offline W&B run, read from its log.

    W&B's service process may still be writing the log when ``finish()`` returns on a loaded
    machine: the log is read again until it holds the run record and parses whole (a record
    caught half-written does not), for at most ``wait_s``."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = _read_run(run_dir)
        except DecodeError:
            if time.monotonic() > deadline:
                raise
            info = {}
        if "id" in info or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


def _read_run(run_dir: Path) -> dict:
    from wandb.proto import wandb_internal_pb2

    info: dict = {"config": {}, "summary": {}, "history": [], "files": set(), "artifacts": []}
    for data in wandb_records(next(run_dir.glob("*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(
                id=run.run_id, group=run.run_group, name=run.display_name, job_type=run.job_type
            )
            updates = run.config.update
        elif kind == "config":
            updates = record.config.update
        elif kind == "summary":
            for item in record.summary.update:
                _put(info["summary"], item)
            continue
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _put(row, item)
            info["history"].append(row)
            continue
        elif kind == "files":
            info["files"].update(f.path for f in record.files.files)
            continue
        elif kind == "artifact":
            info["artifacts"].append((record.artifact.type, record.artifact.name))
            continue
        else:
            continue
        for item in updates:
            value = json.loads(item.value_json)
            info["config"][item.key] = (
                value.get("value", value) if isinstance(value, dict) else value
            )
    return info
