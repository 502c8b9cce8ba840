"""OmegaConf resolvers used in the config tree."""

from __future__ import annotations

import datetime
import os

from omegaconf import OmegaConf

_RUN_ID: str | None = None


def run_id() -> str:
    """An id shared by every rank and node of one run, used to name the run directory.

    ``HEPEXP_RUN_ID`` if set, else the SLURM job (and array task) id, else the torchrun run id,
    else the start time of this process (a single-process run, or Lightning's own DDP launcher,
    which passes the run directory to its children).
    """
    global _RUN_ID
    if _RUN_ID is None:
        env = os.environ
        if env.get("HEPEXP_RUN_ID"):
            _RUN_ID = env["HEPEXP_RUN_ID"]
        elif env.get("SLURM_JOB_ID"):
            array = env.get("SLURM_ARRAY_TASK_ID")
            _RUN_ID = f"slurm-{env['SLURM_JOB_ID']}" + (f"_{array}" if array else "")
        elif env.get("TORCHELASTIC_RUN_ID", "none") != "none":
            _RUN_ID = f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
        else:
            _RUN_ID = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")[:-3]
    return _RUN_ID


def register_resolvers() -> None:
    """Register ``${run_id:}``; safe to call more than once."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
