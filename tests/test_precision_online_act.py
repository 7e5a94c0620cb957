"""Two semi-supervised steps through Lightning with `trainer.precision=bf16-mixed` (autocast runs
on the CPU too), online ACT and RPLM: autocast covers the whole step (student, the teacher's
pseudo-labelling pass and its soft-target ROI pass), the losses are finite, and the online queue
fills from the initial reference pass and the training batches and is checkpointed."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.method.module import LabelMatchModule
from tests.conftest import compose_config

REFERENCE_IMAGES, STEPS = 8, 2


def record_output_dtypes(module: torch.nn.Module, seen: list[torch.dtype]) -> None:
    def hook(_module, _inputs, output) -> None:
        first = next(iter(output.values())) if isinstance(output, dict) else output
        seen.append((first[0] if isinstance(first, tuple) else first).dtype)

    module.register_forward_hook(hook)


@pytest.fixture(scope="module")
def bf16_online_run(tmp_path_factory, cache_dir):
    cfg = compose_config(
        [
            "experiment=smoke",
            "method.burn_in_steps=0",
            "method.act.mode=online",
            f"method.act.subset={REFERENCE_IMAGES}",
        ]
    )
    L.seed_everything(0)
    datamodule = instantiate(cfg.data, use_unlabeled=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = LabelMatchModule(
        instantiate(cfg.model, num_classes=datamodule.num_classes),
        method=OmegaConf.to_container(cfg.method, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        class_names=list(datamodule.class_names),
        category_ids=list(datamodule.category_map.category_ids),
        val_json=str(datamodule.splits.val_json),
    )
    dtypes: dict[str, list[torch.dtype]] = {"student": [], "teacher": [], "teacher_roi": []}
    record_output_dtypes(module.student.backbone, dtypes["student"])
    record_output_dtypes(module.teacher.backbone, dtypes["teacher"])
    record_output_dtypes(module.teacher.roi_heads.box_head, dtypes["teacher_roi"])
    act = ACTRefresh(mode="online", subset=REFERENCE_IMAGES, queue_images=64, queue_top_k=5)
    run_dir = tmp_path_factory.mktemp("bf16")
    trainer = L.Trainer(
        precision="bf16-mixed",
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[act],
        default_root_dir=run_dir,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(run_dir / "last.ckpt")
    return trainer, module, act, dtypes, run_dir / "last.ckpt", cfg.data.unlabeled_batch_size


def test_bf16_mixed_covers_the_whole_semi_supervised_step(bf16_online_run) -> None:
    trainer, module, _, dtypes, _, _ = bf16_online_run
    assert trainer.global_step == STEPS and module.in_semi_supervised_phase
    assert type(trainer.precision_plugin).__name__ == "MixedPrecision"
    # Student and teacher ran under autocast at every step; the teacher's box head ran for its
    # detections and again for the soft targets of the uncertain proposals.
    assert dtypes["student"] and set(dtypes["student"]) == {torch.bfloat16}
    assert dtypes["teacher"] and set(dtypes["teacher"]) == {torch.bfloat16}
    assert len(dtypes["teacher_roi"]) > len(dtypes["teacher"])
    assert set(dtypes["teacher_roi"]) == {torch.bfloat16}
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/unsup_loss", "train/unsup/roi_soft", "train/sup_loss"):
        assert math.isfinite(float(metrics[name])), name


def test_online_queue_fills_from_training_batches_and_is_checkpointed(bf16_online_run) -> None:
    _, module, act, _, checkpoint_path, unlabeled_batch = bf16_online_run
    assert act.queue.num_images == REFERENCE_IMAGES + STEPS * unlabeled_batch
    reliable, uncertain = act.queue_thresholds(act.aimed_prior(module))
    assert torch.equal(module.reliable_thresholds, reliable)
    assert torch.equal(module.uncertain_thresholds, uncertain)

    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    restored = ACTRefresh(mode="online")
    restored.load_state_dict(state["callbacks"]["ACTRefresh"])
    assert torch.equal(restored.queue.scores, act.queue.scores)
    assert (restored.queue.next_slot, restored.queue.num_images) == (
        act.queue.next_slot,
        act.queue.num_images,
    )
