"""The paper's experiments as one-word configs: each composes with the official settings (both
stages of the two-stage recipe, every number pinned with the official file it comes from), the
cluster launcher composes, and missing data is one clear error before any model is built."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from labelmatch.cli import ConfigError
from labelmatch.data.transforms import LongSideRatio, ShortSideChoice, ShortSideRange
from labelmatch.run import (
    check_experiment_package,
    check_one_batch_per_step,
    check_teacher_start,
)
from tests.conftest import CONF_DIR, compose_config, run_cli

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
PAPER = ["coco_1pct", "coco_5pct", "coco_10pct", "coco_ablation", "coco_additional", "voc"]

# Stage 2, LabelMatch, on 8 GPUs: (labeled, unlabeled images per GPU, lr, steps, lr x 0.1 at),
# from hikvision-research/SSOD's configs/labelmatch/ (lr = BASE x samples_per_gpu x gpu / 32).
LABELMATCH_RECIPES = {
    # labelmatch_standard_paper.py: samples_per_gpu 2, BASE 0.02, total_iter 160000,
    # step=[total_iter] (no decay before the end).
    "coco_1pct": (2, 2, 0.01, 160_000, []),
    "coco_5pct": (2, 2, 0.01, 160_000, []),
    "coco_10pct": (2, 2, 0.01, 160_000, []),
    # labelmatch_standard.py (the 40k-step ablations): samples_per_gpu 4, BASE 0.02.
    "coco_ablation": (4, 4, 0.02, 40_000, []),
    # labelmatch_additional.py: samples_per_gpu 4, BASE 0.004, step=[360000, 480000].
    "coco_additional": (4, 4, 0.004, 540_000, [360_000, 480_000]),
    # labelmatch_voc.py: samples_per_gpu 2, BASE 0.01, total_iter 160000.
    "voc": (2, 2, 0.005, 160_000, []),
}

# Stage 1, the supervised baselines: configs/baseline/baseline_ssod.py, lr =
# samples_per_gpu x gpu x 0.01 / 8, 12 x times epochs, lr x 0.1 after 8 x times and 11 x times
# epochs; gpu and times from examples/train/xonsh/train_gpu{2,8}.sh (coco-standard and voc on
# 2 GPUs x 8, coco-additional on 8 x 8; times 5 at 1 %, 2 at 5 / 10 %, else 1).
# experiment: (images per step, steps per epoch, times, data.splits.percent); steps per epoch from
# the official fold-1 logs docs/log/baseline_1_{1,5,10}.log, else ceil(images / batch): VOC07
# trainval 5011 images, train2017 117,266 with annotations.
BASELINE_RECIPES = {
    "coco_1pct_baseline": (16, 74, 5, 1),
    "coco_5pct_baseline": (16, 358, 2, 5),
    "coco_10pct_baseline": (16, 700, 2, 10),
    "voc_baseline": (16, 314, 1, None),
    "coco_additional_baseline": (64, 1833, 1, None),
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    # Resolving catches broken interpolations; data.splits.root / backbone_weights stay ???.
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    # The README's loader keys exist in every data config, so `data.KEY=...` overrides them.
    loader_keys = {"num_workers", "pin_memory", "persistent_workers", "inference_workers"}
    assert loader_keys <= set(cfg.data), loader_keys - set(cfg.data)


def _paper_detector_and_optimiser(cfg) -> None:
    """Both stages: R50-FPN on 8 GPUs (DDP), SGD momentum 0.9, weight decay 1e-4, linear
    warm-up over 500 steps from 0.001 x lr (docs/method.md §1)."""
    assert cfg.model._target_.endswith("build_frcnn_r50_fpn")
    assert OmegaConf.is_missing(cfg.data.splits, "root")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (8, 1)
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy")
    optim = cfg.optim
    assert (optim.momentum, optim.weight_decay) == (0.9, 1e-4)
    assert (optim.warmup_steps, optim.warmup_factor, optim.gamma) == (500, 0.001, 0.1)


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_carry_the_official_settings(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    _paper_detector_and_optimiser(cfg)
    labeled, unlabeled, lr, steps, milestones = LABELMATCH_RECIPES[experiment]
    assert (cfg.data.labeled_batch_size, cfg.data.unlabeled_batch_size) == (labeled, unlabeled)
    assert (cfg.optim.lr, cfg.trainer.max_steps, list(cfg.optim.milestones)) == (
        lr, steps, milestones
    )  # fmt: skip
    method = cfg.method
    assert method.name == "labelmatch"
    assert (method.act.interval, method.act.subset, method.alpha) == (1000, 10000, 0.2)
    assert (method.unsup_weight, method.tpt, method.tps, method.ema_momentum) == (
        2.0, 0.5, 1.0, 0.996
    )  # fmt: skip
    # Two-stage: student and teacher from the baseline (load_from = ema_ckpt), no burn-in.
    assert method.init_from is None and method.burn_in_steps == 0


@pytest.mark.parametrize("experiment", sorted(BASELINE_RECIPES))
def test_baseline_experiments_follow_the_official_baseline_schedule(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    _paper_detector_and_optimiser(cfg)
    images, epoch, times, percent = BASELINE_RECIPES[experiment]
    assert cfg.method.name == "supervised"
    check_teacher_start(cfg)  # nothing to start from: stage 1 trains from ImageNet weights
    assert cfg.data.labeled_batch_size * cfg.trainer.devices == images
    assert cfg.optim.lr == pytest.approx(images * 0.01 / 8)
    assert cfg.trainer.max_steps == 12 * times * epoch
    assert list(cfg.optim.milestones) == [8 * times * epoch, 11 * times * epoch]
    assert cfg.trainer.val_check_interval == times * epoch  # evaluation = dict(interval=times)
    if percent is not None:
        assert cfg.data.splits.percent == percent
    # The baseline's pipeline: Resize(img_scale=[(1333, 500), (1333, 800)]) and a flip, no
    # AugmentationUT; test (1333, 800).
    data = instantiate(compose_config([f"experiment={experiment}", "data.splits.root=/data"]).data)
    assert data.labeled_transform.resize == ShortSideRange(500, 800, 1333)
    assert data.labeled_transform.jitter is None
    assert (data.test_transform.scale, data.test_transform.max_size) == (800, 1333)


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_stop_until_a_baseline_or_a_burn_in_is_given(experiment: str) -> None:
    with pytest.raises(ConfigError, match="experiment=<name>_baseline"):
        check_teacher_start(compose_config([f"experiment={experiment}"]))
    check_teacher_start(compose_config([f"experiment={experiment}", "method.init_from=b.ckpt"]))
    check_teacher_start(compose_config([f"experiment={experiment}", "method.burn_in_steps=2000"]))


def test_a_gpu_recipe_on_a_machine_without_one_says_what_to_pass(monkeypatch) -> None:
    from labelmatch.run import check_accelerator

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    check_accelerator(compose_config([]))  # the digits default: accelerator auto
    cfg = compose_config(["experiment=coco_1pct", "data.splits.root=/coco"])
    assert cfg.trainer.accelerator == "gpu"
    with pytest.raises(ConfigError, match=r"no GPU is visible here; pass trainer.accelerator=cpu"):
        check_accelerator(cfg)
    check_accelerator(compose_config(["experiment=coco_1pct", "trainer.accelerator=cpu"]))


def test_gradient_accumulation_is_refused_with_what_to_do_instead() -> None:
    check_one_batch_per_step(compose_config([]))
    with pytest.raises(ConfigError, match=r"accumulate_grad_batches=4 is not supported"):
        check_one_batch_per_step(compose_config(["+trainer.accumulate_grad_batches=4"]))


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiments_resize_as_the_official_pipelines(experiment: str) -> None:
    # docs/method.md §5; labelmatch_standard_paper.py, labelmatch_voc.py, labelmatch_additional.py:
    # labeled and strong Resize(img_scale=(1024, 1024), ratio_range=(0.2, 1.8), keep_ratio),
    # weak ResizeBox(img_scale=[(1333, 500), (1333, 800)]), test (1333, 800);
    # labelmatch_standard.py (the 40k-step ablations) ratio_range=(0.5, 1.5).
    ratios = (0.5, 1.5) if experiment == "coco_ablation" else (0.2, 1.8)
    data = instantiate(compose_config([f"experiment={experiment}", "data.splits.root=/coco"]).data)
    rule = LongSideRatio(1024, ratios)
    assert data.labeled_transform.resize == data.unlabeled_views.strong_resize == rule
    assert data.unlabeled_views.weak_resize == ShortSideRange(500, 800, 1333)
    assert (data.test_transform.scale, data.test_transform.max_size) == (800, 1333)
    assert data.labeled_transform.jitter is not None  # AugmentationUT(use_re=False)
    # One key switches both views to the ablation range.
    ablation = compose_config(
        [
            f"experiment={experiment}",
            "data.splits.root=/coco",
            "data.train_scales.ratio_range=[0.5,1.5]",
        ]
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
    coco = compose_config([f"experiment=coco_{percent}pct", "data.splits.fold=3"])
    assert coco.data.splits._target_.endswith("CocoStandardSplits")
    splits = coco.data.splits
    assert (splits.percent, splits.fold, splits.split) == (percent, 3, "stac")
    digits = compose_config([f"experiment=digits_{percent}pct"])
    assert digits.data.splits._target_.endswith("DigitsFoldSplits")
    splits = digits.data.splits
    assert (splits.percent, splits.fold, splits.num_train) == (percent, 1, 1000)
    # The default digits recipe, only the data differs.
    default = compose_config()
    assert digits.trainer == default.trainer and digits.method == default.method


@pytest.mark.parametrize("stage", ["", "_baseline"])
def test_voc_and_coco_additional_read_their_own_data(stage: str) -> None:
    assert compose_config([f"experiment=voc{stage}"]).data.splits._target_.endswith("VocSplits")
    additional = compose_config([f"experiment=coco_additional{stage}"]).data
    assert additional.splits._target_.endswith("CocoAdditionalSplits")


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
        tmp_path / "run",
        cache_dir,
        "experiment=coco_5pct",
        f"data.splits.root={missing}",
        "data.splits.fold=2",
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
    assert "data.splits.root is not set" in output
    assert "Traceback" not in output


def test_an_overlay_without_the_global_package_header_is_refused(tmp_path, cache_dir) -> None:
    """conf/experiment/<name>.yaml without `# @package _global_`: Hydra nests its keys under
    `experiment.`, where nothing reads them; the run trained without them (method.alpha stayed
    0.2, rc 0). Now it stops at once, naming the header."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "no_header.yaml").write_text("method:\n  alpha: 0.3\n")
    tiny = ["data.splits.num_labeled=16", "data.splits.num_unlabeled=48", "data.splits.num_val=16",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "method.burn_in_steps=1",
            "method.act.subset=16", "data.num_workers=0"]  # fmt: skip
    result = run_cli(
        tmp_path / "run", cache_dir, "experiment=no_header",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", *tiny,
    )  # fmt: skip
    assert result.returncode != 0
    assert "experiment.method" in result.stderr + result.stdout
    assert "# @package _global_" in result.stderr + result.stdout
    check_experiment_package(compose_config(["experiment=digits_shift"]))  # has the header
