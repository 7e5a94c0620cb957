"""Random number generator states in checkpoints, so that a resumed run continues the same
random streams: the detector's own sampling (RPN and ROI-head proposal sampling draw from the
global torch RNG) and anything else drawing from python's or numpy's global generators.

The data does not depend on these: every training sample is augmented under its own seed
(`labelmatch.data.samplers`). Each rank's states are saved; a run resumed on another number of
processes keeps the states it was seeded with, and says so.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

from labelmatch.distributed import gather_saved

log = logging.getLogger(__name__)


def capture_random_states() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and (when initialised) CUDA generator states,
    as tensors, ints and strings only (loadable with `torch.load(weights_only=True)`)."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.copy()), position, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Inverse of `capture_random_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((name, keys.numpy(), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        # One state per GPU visible when saved; resumed where fewer are visible (a requeued
        # job on a smaller share of the node), each visible device takes its own.
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


class RandomStates(L.Callback):
    """Saves every rank's generator states with each checkpoint; restores them on resume just
    before the first training step (nothing in between draws from them in an uninterrupted run,
    so the streams continue exactly)."""

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank while a checkpoint is assembled; rank 0 writes the file.
        return {"ranks": gather_saved(capture_random_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict["ranks"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        saved, self._to_restore = self._to_restore, None
        if len(saved) != trainer.world_size:
            log.warning(
                "the checkpoint holds random states of %d processes, this run has %d: the "
                "random streams restart from the seed (the data stream still resumes exactly)",
                len(saved),
                trainer.world_size,
            )
            return
        restore_random_states(saved[trainer.global_rank])
