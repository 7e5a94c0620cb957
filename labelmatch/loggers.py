"""Experiment loggers beside the always-on CSV: wandb (offline without an account) or TensorBoard.

`conf/logger/*.yaml` instantiate Lightning's own loggers; this module only decides wandb's mode,
hands images and tables to whichever of them is present, and closes the wandb run at the end of
a job (so that each job of a Hydra multirun is its own wandb run).
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from labelmatch.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    """Whether wandb could log in without asking: WANDB_API_KEY, or a ~/.netrc entry for the
    wandb host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """`logger.wandb.mode` as wandb takes it: "auto" becomes WANDB_MODE when set, else "online" when
    an API key is configured and "offline" otherwise."""
    if mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")


def wandb_logger(
    save_dir: str,
    project: str = "labelmatch",
    mode: str = "auto",
    name: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """Lightning's WandbLogger in `resolve_wandb_mode(mode)` (offline on a laptop without an
    account; `wandb sync` uploads such a run later). The run's files go to WANDB_DIR when set,
    else into `save_dir` (the run directory)."""
    mode = resolve_wandb_mode(mode)
    log.info("wandb mode: %s", mode)
    save_dir = os.environ.get("WANDB_DIR", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, name=name, mode=mode, **kwargs)


def log_image(loggers: Iterable[Logger], key: str, path: Path, step: int) -> None:
    """A PNG to wandb (an image panel) and TensorBoard (an image summary); CSV has none."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            pixels = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(key, pixels, step, dataformats="HWC")


def log_table(
    loggers: Iterable[Logger], key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """A table to wandb (TensorBoard and CSV get the same numbers as scalars)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=list(columns), data=[list(r) for r in rows])


def finish_wandb_run(succeeded: bool) -> None:
    """End the job's wandb run, if one was started, so the next job (multirun) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=0 if succeeded else 1)
