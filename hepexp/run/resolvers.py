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


def process_rank() -> int | str:
    """This process's rank in a distributed run (0 when not distributed), from the environment.

    ``RANK`` (torchrun), else ``NODE_RANK``/``LOCAL_RANK`` (Lightning's DDP children, as
    ``"node-local"`` when not 0), else ``SLURM_PROCID`` of a multi-task SLURM step (srun).
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "LOCAL_RANK" in env:
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
        local = int(env["LOCAL_RANK"])
        return 0 if node == local == 0 else f"{node}-{local}"
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0"))
    return 0


def rank_zero_only(value: str) -> str | None:
    """``value`` on rank 0, null on the other ranks (e.g. ``hydra.output_subdir``)."""
    return value if process_rank() == 0 else None


def rank_suffix() -> str:
    """``""`` on rank 0, ``".rank<r>"`` elsewhere: per-rank file names (logs)."""
    rank = process_rank()
    return "" if rank == 0 else f".rank{rank}"


def register_resolvers() -> None:
    """Register ``${run_id:}``, ``${rank_zero_only:x}``, ``${rank_suffix:}``; safe to repeat."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("rank_zero_only"):
        OmegaConf.register_new_resolver("rank_zero_only", rank_zero_only)
    if not OmegaConf.has_resolver("rank_suffix"):
        OmegaConf.register_new_resolver("rank_suffix", rank_suffix)
