"""Logger factories: W&B that falls back to offline for users without an account."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import sys
from typing import Any

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """True if W&B could log online: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or None)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    return rc.authenticators(host) is not None


def wandb_offline(offline: bool | None, save_dir: str | os.PathLike = ".") -> bool:
    """Whether W&B logs offline: ``offline``, else ``WANDB_MODE``, else when not logged in
    (then say how to upload the run later)."""
    if offline is not None:
        return bool(offline)
    mode = os.environ.get("WANDB_MODE")
    offline = mode in ("offline", "dryrun") or (mode is None and not wandb_credentials_available())
    if offline and mode is None:
        log.warning(
            "W&B: not logged in, logging offline; upload later with: wandb sync %s/wandb/offline-run-*",
            save_dir,
        )
    return offline


def wandb_logger(offline: bool | None = None, **kwargs: Any):
    """A Lightning ``WandbLogger`` that never fails for lack of an account.

    ``offline=None`` logs online when credentials exist (or ``WANDB_MODE`` says so) and
    offline otherwise, printing how to upload the run later. ``log_model`` (checkpoints as
    W&B artifacts) works offline too: the artifacts are uploaded by ``wandb sync``.
    """
    from pytorch_lightning.loggers import WandbLogger

    if importlib.util.find_spec("wandb") is None:
        raise ImportError("logger=wandb needs the wandb package: pip install wandb")
    offline = wandb_offline(offline, kwargs.get("save_dir", "."))
    # offline through wandb.init's mode: Lightning's own offline=True refuses log_model
    return WandbLogger(**kwargs, **({"mode": "offline"} if offline else {}))


def finish_wandb(failed: bool = False) -> None:
    """End this process's open W&B run, if any, so that the next job of a multirun run in this
    process starts a run of its own instead of appending to this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
