"""optim.scale_to_batch: the recipe rescaled to the total batch (linear scaling rule)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from labelmatch.scaling import ScalingError, device_count, scale_steps, scale_to_batch
from tests.conftest import CONF_DIR, compose_config, run_cli


def test_steps_scale_inversely_and_round():
    assert scale_steps(1000, 2.0) == 500
    assert scale_steps(1000, 0.5) == 2000
    assert scale_steps(250, 3.0) == 83  # 83.3
    assert scale_steps(1, 4.0) == 1  # never below one step
    assert scale_steps(0, 2.0) == 0  # no burn-in stays no burn-in
    assert scale_steps(-1, 2.0) == -1  # Lightning's max_steps=-1, no limit, stays one


def test_device_counts_as_lightning_starts_them():
    assert device_count(4, "gpu") == 4
    assert device_count("2", "cpu") == 2
    assert device_count([0, 3], "gpu") == 2
    assert device_count("auto", "cpu") == 1


def test_half_the_batch_halves_the_lr_and_doubles_every_step_count():
    cfg = compose_config(
        ["optim.scale_to_batch=true", "optim.reference_batch=16", "optim.milestones=[800,900]"]
    )  # the digits recipe: 1 device x 8 labeled images = 8, against 16
    before = OmegaConf.to_container(cfg)
    changes = scale_to_batch(cfg)
    assert changes[0] == "total batch 8 against the recipe's 16: x0.5"
    assert cfg.optim.lr == pytest.approx(before["optim"]["lr"] / 2)
    assert cfg.trainer.max_steps == 2 * before["trainer"]["max_steps"]
    assert cfg.trainer.val_check_interval == 2 * before["trainer"]["val_check_interval"]
    assert cfg.method.burn_in_steps == 2 * before["method"]["burn_in_steps"]
    assert cfg.method.act.interval == 2 * before["method"]["act"]["interval"]
    assert cfg.optim.warmup_steps == 2 * before["optim"]["warmup_steps"]
    assert cfg.checkpoint_every_n_steps == 2 * before["checkpoint_every_n_steps"]
    assert list(cfg.optim.milestones) == [1600, 1800]
    assert f"trainer.max_steps: {before['trainer']['max_steps']} -> " in "\n".join(changes)
    # Unchanged: batch sizes, images per ACT refresh, EMA momentum.
    assert cfg.data.labeled_batch_size == before["data"]["labeled_batch_size"]
    assert cfg.method.act.subset == before["method"]["act"]["subset"]


def test_devices_and_nodes_multiply_the_batch():
    cfg = compose_config(
        ["optim.scale_to_batch=true", "optim.reference_batch=8", "trainer.devices=2",
         "trainer.num_nodes=2", "trainer.accelerator=cpu"]
    )  # fmt: skip
    lr, steps = cfg.optim.lr, cfg.trainer.max_steps
    scale_to_batch(cfg)  # 2 x 2 x 8 = 32 against 8
    assert cfg.optim.lr == pytest.approx(4 * lr) and cfg.trainer.max_steps == steps // 4


def test_nothing_changes_unless_asked_or_at_the_reference_batch():
    cfg = compose_config(["optim.reference_batch=16"])
    assert scale_to_batch(cfg) == [] and cfg == compose_config(["optim.reference_batch=16"])
    at_reference = compose_config(["optim.scale_to_batch=true", "optim.reference_batch=8"])
    assert scale_to_batch(at_reference) == ["total batch 8 against the recipe's 8: x1"]


def test_scaling_without_a_reference_batch_is_an_error():
    with pytest.raises(ScalingError, match="needs optim.reference_batch"):
        scale_to_batch(compose_config(["optim.scale_to_batch=true", "optim.reference_batch=null"]))


def test_the_run_prints_and_saves_the_scaled_config(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        run_dir, cache_dir, "experiment=smoke", "optim.scale_to_batch=true",
        "optim.reference_batch=8", "trainer.max_steps=0",
    )  # fmt: skip  # smoke: 4 labeled images per step against 8: x0.5
    assert "optim.scale_to_batch: total batch 4 against the recipe's 8: x0.5" in result.stdout
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.method.burn_in_steps == 80 and saved.optim.lr == pytest.approx(0.01)


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
)
def test_every_recipe_names_the_batch_it_was_written_for(experiment):
    """On the hardware of the recipe itself (its devices; one process where it leaves them to
    Lightning on this CPU-only machine), scaling changes nothing."""
    cfg = compose_config([f"experiment={experiment}", "optim.scale_to_batch=true"])
    devices = device_count(cfg.trainer.devices, "cpu")
    assert cfg.optim.reference_batch == devices * cfg.data.labeled_batch_size
    assert scale_to_batch(cfg)[1:] == []


def test_device_lists_given_as_text_count_their_entries():
    assert device_count("0,1", "gpu") == 2 and device_count("0, 2, 3", "gpu") == 3
    with pytest.raises(ScalingError, match="not a device count"):
        device_count("two", "gpu")
