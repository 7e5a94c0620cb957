"""Optimiser and learning-rate schedule of the official recipe (docs/method.md §1)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def warmup_multistep_factor(
    step: int,
    warmup_steps: int,
    warmup_factor: float,
    milestones: Sequence[int],
    gamma: float,
) -> float:
    """LR multiplier at `step`: linear warm-up from `warmup_factor` to 1 over `warmup_steps`,
    times `gamma` for every absolute milestone already reached (MMDetection's step policy)."""
    warmup = 1.0
    if step < warmup_steps:
        progress = step / warmup_steps
        warmup = warmup_factor * (1.0 - progress) + progress
    return warmup * gamma ** bisect_right(sorted(milestones), step)


def build_sgd(
    parameters: Iterable[nn.Parameter],
    lr: float,
    momentum: float,
    weight_decay: float,
    warmup_steps: int,
    warmup_factor: float,
    milestones: Sequence[int],
    gamma: float,
    scale_to_batch: bool = False,
    reference_batch: int | None = None,
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (momentum, weight decay) with warm-up + multi-step decay, stepped per iteration.

    `scale_to_batch` / `reference_batch` belong to the `optim` config but act before training,
    on the whole config (`labelmatch.scaling`); the values here are already scaled."""
    optimizer = torch.optim.SGD(
        [p for p in parameters if p.requires_grad],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_multistep_factor(step, warmup_steps, warmup_factor, milestones, gamma),
    )
    return optimizer, scheduler
