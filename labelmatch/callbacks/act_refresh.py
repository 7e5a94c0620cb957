"""ACT refresh (method-spec §2, Eq. 5-6) as a Lightning callback.

Before the first semi-supervised step and then every `interval` steps, the teacher predicts on a
freshly shuffled random subset of the unlabeled images; per class, its sorted post-NMS scores and
the labeled class prior give the reliable and uncertain thresholds, written into the module's
threshold buffers (so they are checkpointed and restored with it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from labelmatch.method.act import (
    ClassPrior,
    act_thresholds,
    class_prior_from_counts,
    scores_by_class,
)
from labelmatch.method.pseudo_labels import count_by_thresholds
from labelmatch.progress import progress

log = logging.getLogger(__name__)


class ACTRefresh(L.Callback):
    """Args:
    interval: K, steps between refreshes (official 1000).
    subset: reference images per refresh (official 10000), capped at the unlabeled set's size.
    alpha: reliable share of the expected positives (Eq. 6, official 0.2).
    min_threshold: floor of both thresholds (official 0.05).
    prior: None to count the labeled annotations, or the official `manual_prior`
        {"class_ratios": [C floats], "boxes_per_image": float}.
    """

    def __init__(
        self,
        interval: int = 1000,
        subset: int = 10000,
        alpha: float = 0.2,
        min_threshold: float = 0.05,
        prior: dict | None = None,
    ) -> None:
        self.interval = interval
        self.subset = subset
        self.alpha = alpha
        self.min_threshold = min_threshold
        self.manual_prior = prior
        self.prior: ClassPrior | None = None
        self.refreshes = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.manual_prior is not None:
            self.prior = ClassPrior.from_manual(
                self.manual_prior["class_ratios"], self.manual_prior["boxes_per_image"]
            )
        else:
            dataset = trainer.datamodule.labeled_dataset
            self.prior = class_prior_from_counts(dataset.class_counts, len(dataset))
        if len(self.prior.class_ratios) != len(pl_module.reliable_thresholds):
            raise ValueError(
                f"method.act.prior has {len(self.prior.class_ratios)} classes, the data has "
                f"{len(pl_module.reliable_thresholds)}"
            )

    def state_dict(self) -> dict[str, int]:
        return {"refreshes": self.refreshes}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.refreshes = int(state_dict["refreshes"])

    def is_refresh_step(self, step: int, burn_in_steps: int) -> bool:
        return step >= burn_in_steps and (step - burn_in_steps) % self.interval == 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if not self.is_refresh_step(pl_module.global_step, pl_module.burn_in_steps):
            return
        pl_module.start_semi_supervised()  # the teacher must exist before it labels
        self.refresh(trainer, pl_module)

    def refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        num_images = min(self.subset, len(datamodule.unlabeled_dataset))
        loader = datamodule.reference_dataloader(num_images, seed=pl_module.global_step)
        loader = progress(loader, f"ACT refresh at step {pl_module.global_step}")
        labels, scores = teacher_scores(pl_module, loader)
        labels, scores = gather_across_ranks(trainer, labels, scores)
        num_classes = len(pl_module.reliable_thresholds)
        reliable, uncertain = act_thresholds(
            scores_by_class(labels, scores, num_classes),
            num_images=num_images,
            prior=self.prior,
            alpha=self.alpha,
            min_threshold=self.min_threshold,
        )
        pl_module.reliable_thresholds.copy_(reliable)
        pl_module.uncertain_thresholds.copy_(uncertain)
        self.refreshes += 1
        names = pl_module.hparams.class_names
        log_thresholds(pl_module, names, reliable, uncertain)
        num_reliable, num_uncertain = count_by_thresholds(labels, scores, reliable, uncertain)
        log.info(
            "ACT refresh %d at step %d on %d images: reliable %.3f-%.3f, uncertain %.3f-%.3f; "
            "per image %.2f reliable + %.2f uncertain pseudo boxes (labeled prior %.2f)",
            self.refreshes,
            pl_module.global_step,
            num_images,
            reliable.min(),
            reliable.max(),
            uncertain.min(),
            uncertain.max(),
            num_reliable / num_images,
            num_uncertain / num_images,
            self.prior.boxes_per_image,
        )


# The official refresh pass uses the test-time score floor of 0.001 (method-spec §2); it matters
# when a class has fewer detections than the rank looked up, which then clamps to the last one.
REFRESH_SCORE_FLOOR = 0.001


@torch.no_grad()
def teacher_scores(pl_module: L.LightningModule, loader) -> tuple[Tensor, Tensor]:
    """Post-NMS labels [N] and scores [N] of the teacher (eval mode) over a loader."""
    labels, scores = [], []
    roi_heads = pl_module.teacher.roi_heads
    score_floor, roi_heads.score_thresh = roi_heads.score_thresh, REFRESH_SCORE_FLOOR
    try:
        for batch in loader:
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            for detections in pl_module.teacher(batch["images"]):
                labels.append(detections["labels"])
                scores.append(detections["scores"])
    finally:
        roi_heads.score_thresh = score_floor
    if not labels:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(labels), torch.cat(scores)


def gather_across_ranks(
    trainer: L.Trainer, labels: Tensor, scores: Tensor
) -> tuple[Tensor, Tensor]:
    """All ranks' detections on every rank (the strategy's all_gather; lengths padded with -1)."""
    if trainer.world_size == 1:
        return labels, scores
    strategy = trainer.strategy
    count = torch.tensor([len(labels)], device=labels.device)
    longest = int(strategy.all_gather(count).max())
    padded_labels = torch.full((longest,), -1, dtype=labels.dtype, device=labels.device)
    padded_scores = torch.zeros(longest, dtype=scores.dtype, device=scores.device)
    padded_labels[: len(labels)] = labels
    padded_scores[: len(scores)] = scores
    all_labels = strategy.all_gather(padded_labels).flatten()
    all_scores = strategy.all_gather(padded_scores).flatten()
    valid = all_labels >= 0
    return all_labels[valid], all_scores[valid]


def log_thresholds(
    pl_module: L.LightningModule, names: Sequence[str], reliable: Tensor, uncertain: Tensor
) -> None:
    metrics = {f"act/reliable/{name}": float(t) for name, t in zip(names, reliable)}
    metrics.update({f"act/uncertain/{name}": float(t) for name, t in zip(names, uncertain)})
    pl_module.log_event(metrics)
