"""The paper's experiments as one-word configs: each composes with the settings of method-spec,
the cluster launcher composes, and missing data is one clear error before any model is built."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from labelmatch.data.transforms import LongSideRatio, ShortSideChoice, ShortSideRange
from tests.conftest import CONF_DIR, compose_config, run_cli

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
PAPER = ["coco_1pct", "coco_5pct", "coco_10pct", "coco_additional", "voc"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    # Resolving catches broken interpolations; data.root / backbone_weights stay ??? (mandatory).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    # The README's loader keys exist in every data config, so `data.KEY=...` overrides them.
    loader_keys = {"num_workers", "pin_memory", "persistent_workers", "inference_workers"}
    assert loader_keys <= set(cfg.data), loader_keys - set(cfg.data)


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_carry_the_official_settings(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model._target_.endswith("build_frcnn_r50_fpn")
    assert OmegaConf.is_missing(cfg.data, "root")
    # 16 + 16 images per step on 8 GPUs at lr 0.01; warm-up 500 from 0.001x; no decay.
    assert (cfg.data.labeled_batch_size, cfg.data.unlabeled_batch_size) == (2, 2)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (8, 1)
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy")
    optim = cfg.optim
    assert (optim.lr, optim.warmup_steps, optim.warmup_factor, list(optim.milestones)) == (
        0.01, 500, 0.001, []
    )  # fmt: skip
    method = cfg.method
    assert method.name == "labelmatch"
    assert (method.act.interval, method.act.subset, method.alpha) == (1000, 10000, 0.2)
    assert (method.unsup_weight, method.tpt, method.tps, method.ema_momentum) == (
        2.0, 0.5, 1.0, 0.996
    )  # fmt: skip
    iterations = {"coco_additional": 540_000, "voc": 80_000}.get(experiment, 160_000)
    assert cfg.trainer.max_steps == iterations


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_resize_as_the_official_pipelines(experiment: str) -> None:
    # docs/method.md §5; labelmatch_standard_paper.py, labelmatch_voc.py, labelmatch_additional.py:
    # labeled and strong Resize(img_scale=(1024, 1024), ratio_range=(0.2, 1.8), keep_ratio),
    # weak ResizeBox(img_scale=[(1333, 500), (1333, 800)]), test (1333, 800).
    data = instantiate(compose_config([f"experiment={experiment}", "data.root=/coco"]).data)
    paper_table = LongSideRatio(1024, (0.2, 1.8))
    assert data.labeled_transform.resize == data.unlabeled_views.strong_resize == paper_table
    assert data.unlabeled_views.weak_resize == ShortSideRange(500, 800, 1333)
    assert (data.test_transform.scale, data.test_transform.max_size) == (800, 1333)
    assert data.labeled_transform.jitter is not None  # AugmentationUT(use_re=False)
    # labelmatch_standard.py (the 40k-step ablations) draws r ~ U(0.5, 1.5): one key for both.
    ablation = compose_config(
        [f"experiment={experiment}", "data.root=/coco", "data.train_scales.ratio_range=[0.5,1.5]"]
    )
    data = instantiate(ablation.data)
    assert data.labeled_transform.resize == LongSideRatio(1024, (0.5, 1.5))
    assert data.unlabeled_views.strong_resize == LongSideRatio(1024, (0.5, 1.5))


@pytest.mark.parametrize("experiment", ["digits", "digits_1pct", "smoke"])
def test_embedded_experiments_keep_their_own_short_sides(experiment: str) -> None:
    data = instantiate(compose_config([f"experiment={experiment}"]).data)
    assert data.labeled_transform.resize == ShortSideChoice((96, 112, 128, 144, 160), 256)
    assert data.unlabeled_views.strong_resize == ShortSideChoice((96, 112, 128, 144, 160), 256)
    assert data.unlabeled_views.weak_resize == ShortSideChoice((112, 128, 144), 256)
    assert (data.test_transform.scale, data.test_transform.max_size) == (128, 256)


@pytest.mark.parametrize("percent", [1, 5, 10])
def test_coco_and_digits_percent_experiments_pick_percent_and_fold(percent: int) -> None:
    coco = compose_config([f"experiment=coco_{percent}pct", "data.fold=3"])
    assert coco.data._target_.endswith("coco_standard_datamodule")
    assert (coco.data.percent, coco.data.fold, coco.data.split) == (percent, 3, "stac")
    digits = compose_config([f"experiment=digits_{percent}pct"])
    assert digits.data._target_.endswith("digits_fold_datamodule")
    assert (digits.data.percent, digits.data.fold, digits.data.num_train) == (percent, 1, 1000)
    # The default digits recipe, only the data differs.
    default = compose_config()
    assert digits.trainer == default.trainer and digits.method == default.method


def test_voc_and_coco_additional_read_their_own_data() -> None:
    assert compose_config(["experiment=voc"]).data._target_.endswith("voc_datamodule")
    additional = compose_config(["experiment=coco_additional"]).data
    assert additional._target_.endswith("coco_additional_datamodule")


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_slurm_launcher_composes_with_the_project_config(launcher: str) -> None:
    cfg = compose_config(
        [f"hydra/launcher={launcher}", "experiment=coco_10pct", "trainer.num_nodes=2"],
        return_hydra_config=True,
    )
    # What Hydra does at -m: instantiate the launcher from the node inside the whole config.
    slurm = instantiate(cfg.hydra.launcher)
    assert type(slurm).__name__ == "SlurmLauncher"
    if launcher == "slurm":  # one task per GPU, sized from the trainer
        params = slurm.params
        assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)


def test_missing_data_root_is_one_clear_error_naming_the_prepare_command(
    tmp_path, cache_dir
) -> None:
    missing = tmp_path / "no_coco_here"
    result = run_cli(
        tmp_path / "run", cache_dir, "experiment=coco_5pct", f"data.root={missing}", "data.fold=2"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{missing} does not exist" in output
    command = (
        f"python -m labelmatch.prepare coco_standard --data-dir {missing} --percent 5 --seed 2"
    )
    assert command in output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training


def test_unset_data_root_is_one_clear_error(tmp_path, cache_dir) -> None:
    result = run_cli(tmp_path / "run", cache_dir, "experiment=voc")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "data.root is not set" in output
    assert "Traceback" not in output
