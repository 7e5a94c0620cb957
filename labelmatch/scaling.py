"""A recipe scaled to the hardware at hand: `optim.scale_to_batch=true` (the linear scaling rule).

A recipe is written for a total batch `optim.reference_batch` (labeled images per step over all
processes; as many unlabeled). With another total batch B = devices x nodes x
`data.labeled_batch_size`, the learning rate is multiplied by B / reference and every step count
divided by it, so the run sees the same number of images at the same per-image learning rate
(Goyal et al. 2017; the official configs scale lr with the batch the same way, docs/method.md §1).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Config keys holding a number of optimiser steps (scaled by reference / B).
STEP_KEYS = (
    "trainer.max_steps",
    "trainer.val_check_interval",
    "method.burn_in_steps",
    "method.act.interval",
    "optim.warmup_steps",
    "checkpoint_every_n_steps",
)
MILESTONES_KEY = "optim.milestones"


class ScalingError(ValueError):
    """A config that `optim.scale_to_batch` cannot scale."""


def device_count(devices: Any, accelerator: str) -> int:
    """Processes per node that Lightning starts for `trainer.devices` (an int, a list of device
    indices or a string of them such as "0,1", "auto", -1)."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if str(devices).strip() in ("auto", "-1"):
        uses_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if uses_gpu else 1
    text = str(devices).strip()
    try:
        if "," in text:
            return len([index for index in text.split(",") if index.strip()])
        return int(text)
    except ValueError:
        raise ScalingError(f"trainer.devices={devices!r}: not a device count or list") from None


def total_batch(cfg: DictConfig) -> int:
    """Labeled images per optimiser step over all processes."""
    trainer = cfg.trainer
    devices = device_count(trainer.get("devices", 1), str(trainer.get("accelerator", "auto")))
    return devices * int(trainer.get("num_nodes", 1)) * int(cfg.data.labeled_batch_size)


def scale_steps(steps: int, factor: float) -> int:
    """`steps` / factor, rounded, at least 1 (0 stays 0: e.g. no burn-in; a negative count,
    Lightning's `max_steps=-1` for "no limit", stays as it is)."""
    return steps if steps <= 0 else max(1, round(steps / factor))


def scale_to_batch(cfg: DictConfig) -> list[str]:
    """Rescale `cfg` in place to its total batch when `optim.scale_to_batch` is true.

    Returns the factor's line, then one per changed value ("key: old -> new"); empty when
    `optim.scale_to_batch` is false.
    """
    if not cfg.optim.get("scale_to_batch", False):
        return []
    reference = cfg.optim.get("reference_batch")
    if not reference:
        raise ScalingError(
            "optim.scale_to_batch=true needs optim.reference_batch, the total labeled images per "
            "step the recipe was written for (the paper experiments set it)"
        )
    batch = total_batch(cfg)
    factor = batch / float(reference)
    changes = [f"total batch {batch} against the recipe's {reference}: x{factor:g}"]

    def change(key: str, new: Any) -> None:
        old = OmegaConf.select(cfg, key)
        if old != new:
            OmegaConf.update(cfg, key, new, merge=False)
            changes.append(f"{key}: {old} -> {new}")

    change("optim.lr", float(cfg.optim.lr) * factor)
    for key in STEP_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int) and not isinstance(value, bool):
            change(key, scale_steps(value, factor))
    milestones = OmegaConf.select(cfg, MILESTONES_KEY)
    if milestones:
        change(MILESTONES_KEY, [scale_steps(int(m), factor) for m in milestones])
    return changes
