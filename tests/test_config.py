"""Every config group option composes, and the composed values are the documented defaults."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group", ["data", "model", "method", "optim", "trainer", "paths", "experiment"]
)
def test_every_option_of_every_group_composes(group: str) -> None:
    for option in options(group):
        cfg = compose_config([f"{group}={option}"])
        # Resolving catches broken interpolations; ??? (mandatory) values are allowed to stay.
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_method_group_holds_the_official_defaults() -> None:
    cfg = compose_config(["~experiment"])
    assert cfg.data.splits._target_.endswith("DigitsSplits")
    assert cfg.model._target_.endswith("build_frcnn_tiny")
    method = cfg.method
    assert method.name == "labelmatch"
    assert (method.ema_momentum, method.unsup_weight, method.alpha) == (0.996, 2.0, 0.2)
    assert (method.tpt, method.tps) == (0.5, 1.0)
    assert (method.act.interval, method.act.subset, method.act.min_threshold) == (1000, 10000, 0.05)
    assert (method.rplm.score, method.rplm.iou) == (0.8, 0.8)
    # Uncertain group: IoU >= 0.5, the official assigner's (was IoF, docs/method.md §3).
    assert (method.uncertain_metric, method.uncertain_threshold) == ("iou", 0.5)
    assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 1e-4)


def test_mean_teacher_is_one_fixed_threshold_without_act_or_mining() -> None:
    method = compose_config(["method=mean_teacher"]).method
    assert method.name == "mean_teacher"
    assert method.fixed_thresholds.reliable == method.fixed_thresholds.uncertain == 0.7
    assert not method.act.enabled and not method.rplm.enabled


def test_smoke_experiment_overlays_the_defaults() -> None:
    cfg = compose_config(["experiment=smoke"])
    assert cfg.trainer.max_steps <= 60
    assert cfg.data.splits.num_labeled < 50 and cfg.data.num_workers == 0
    assert cfg.method.burn_in_steps < cfg.trainer.max_steps


def test_default_run_is_the_digits_recipe_with_burn_in_then_semi_supervised() -> None:
    cfg = compose_config()
    assert cfg.method.name == "labelmatch"
    assert 0 < cfg.method.burn_in_steps < cfg.trainer.max_steps
    assert cfg.method.act.interval < cfg.trainer.max_steps - cfg.method.burn_in_steps


LOADER_AND_VIEW_KEYS = {
    "labeled_batch_size", "unlabeled_batch_size", "val_batch_size", "reference_batch_size",
    "num_workers", "pin_memory",
    "persistent_workers", "inference_workers", "train_scales", "weak_scales", "strong_scales",
    "test_scale", "max_size", "flip_prob", "labeled_photometric", "skip_invalid", "seed",
}  # fmt: skip


@pytest.mark.parametrize("option", options("data"))
def test_every_data_config_takes_the_same_loader_and_view_keys(option: str) -> None:
    """`data.KEY=...` works whichever dataset is chosen (README, useful keys)."""
    data = compose_config([f"data={option}"]).data
    assert LOADER_AND_VIEW_KEYS <= set(data), LOADER_AND_VIEW_KEYS - set(data)
