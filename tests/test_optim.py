from __future__ import annotations

import pytest
import torch

from labelmatch.optim import build_sgd, warmup_multistep_factor


def test_warmup_is_linear_from_the_warmup_factor() -> None:
    assert warmup_multistep_factor(0, 100, 0.001, [], 0.1) == pytest.approx(0.001)
    assert warmup_multistep_factor(50, 100, 0.001, [], 0.1) == pytest.approx(0.5005)
    assert warmup_multistep_factor(100, 100, 0.001, [], 0.1) == 1.0


def test_steps_are_at_absolute_milestones() -> None:
    factors = [warmup_multistep_factor(s, 0, 0.001, [300, 100], 0.1) for s in (99, 100, 299, 300)]
    assert factors == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_sgd_has_the_official_hyper_parameters_and_steps_the_schedule() -> None:
    layer = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_sgd(layer.parameters(), 0.02, 0.9, 1e-4, 10, 0.001, [5], 0.1)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 1e-4)
    assert group["lr"] == pytest.approx(0.02 * 0.001)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert group["lr"] == pytest.approx(0.02 * (0.001 * 0.5 + 0.5) * 0.1)
