"""What the pseudo labels look like during training (the paper's Fig. 4 and 5), as a callback.

Each unsupervised step outputs its pseudo labels and the unlabeled images' ground truth (weak
frame) as `outputs["pseudo"]`. The callback only keeps references to them; every
`log_every_n_steps` steps and at each threshold update it counts the window's boxes per class,
matches them to the ground truth (IoU >= 0.5, same class), sums the counts over the ranks and
logs `pseudo/*` (see `summarize_counts`). At each threshold update it also draws a few strong
views with their reliable (green) and uncertain (yellow) pseudo boxes into
`plots/pseudo_labels/step_<step>.png` and hands them to wandb / TensorBoard.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.evaluation.pseudo_quality import (
    PseudoLabelCounts,
    count_pseudo_labels,
    summarize_counts,
)
from labelmatch.loggers import log_image
from labelmatch.method.act import ClassPrior, configured_prior
from labelmatch.method.pseudo_labels import PseudoLabelBatch, PseudoLabels
from labelmatch.plots import draw_pseudo_labels

log = logging.getLogger(__name__)


def threshold_updates(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """How many times the thresholds have been set: ACT refreshes, or 1 once a fixed-threshold
    teacher starts labelling (mean teacher, act.enabled=false)."""
    refreshes = [cb.refreshes for cb in trainer.callbacks if isinstance(cb, ACTRefresh)]
    if refreshes:
        return sum(refreshes)
    return int(bool(getattr(pl_module, "teacher_ready", False)))


class PseudoLabelStatistics(L.Callback):
    """Args:
    prior: `method.act.prior` (None, the official `manual_prior` {"class_ratios": [C floats],
        "boxes_per_image": float}, "estimated" or "oracle"), for runs without ACT. With ACT the
        statistics compare with the prior ACT's latest refresh used (for "estimated": the
        latest estimate), so `kl_to_prior` measures how well ACT met its own target.
    images_per_update: strong views drawn at each threshold update.
    """

    def __init__(self, prior: dict | str | None = None, images_per_update: int = 4) -> None:
        self.manual_prior = prior
        self.images_per_update = images_per_update
        self.prior: ClassPrior | None = None
        self.with_ground_truth = False
        # The window since the last log: (pseudo labels, gt boxes, gt labels) per image.
        self.pending: list[tuple[PseudoLabels, Tensor, Tensor]] = []
        self.pending_mined = 0
        self.updates_seen = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        self.prior = configured_prior(datamodule, self.manual_prior)
        unlabeled = getattr(datamodule, "unlabeled_dataset", None)
        self.with_ground_truth = unlabeled is not None and sum(unlabeled.class_counts) > 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        pseudo_batch: PseudoLabelBatch | None = outputs.get("pseudo") if outputs else None
        if pseudo_batch is not None:
            self.add(pseudo_batch)
        updates = threshold_updates(trainer, pl_module)
        updated, self.updates_seen = updates != self.updates_seen, updates
        if updated or trainer.global_step % trainer.log_every_n_steps == 0:
            if pl_module.in_semi_supervised_phase:  # the same on every rank (collectives)
                pl_module.log_event(self.reduce(trainer, pl_module))
        if updated and pseudo_batch is not None and trainer.is_global_zero:
            self.draw(trainer, pl_module, pseudo_batch)

    def add(self, pseudo_batch: PseudoLabelBatch) -> None:
        """Keep one step's pseudo labels (weak frame) and ground truth for the next log."""
        self.pending.extend(
            zip(pseudo_batch.pseudo_weak, pseudo_batch.gt_weak_boxes, pseudo_batch.gt_weak_labels)
        )
        self.pending_mined += pseudo_batch.num_mined

    def reduce(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The window's `pseudo/*` statistics over all ranks; empties the window."""
        names = pl_module.hparams.class_names
        counts = self.window_counts(len(names))
        if trainer.world_size > 1:
            vector = counts.to_vector().to(pl_module.device)
            counts = PseudoLabelCounts.from_vector(trainer.strategy.reduce(vector, reduce_op="sum"))
        self.pending, self.pending_mined = [], 0
        act = [cb for cb in trainer.callbacks if isinstance(cb, ACTRefresh)]
        prior = act[0].prior if act and act[0].prior is not None else self.prior
        stats = summarize_counts(
            counts,
            prior.class_ratios,
            prior.boxes_per_image,
            names,
            with_ground_truth=self.with_ground_truth,
        )
        return {f"pseudo/{name}": value for name, value in stats.items()}

    def window_counts(self, num_classes: int) -> PseudoLabelCounts:
        counts = PseudoLabelCounts.zeros(num_classes)
        for pseudo, gt_boxes, gt_labels in self.pending:
            counts = counts + count_pseudo_labels(pseudo, gt_boxes, gt_labels, num_classes)
        counts.mined = self.pending_mined
        return counts

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, pseudo_batch: PseudoLabelBatch
    ) -> None:
        shown = slice(0, self.images_per_update)
        figure = draw_pseudo_labels(
            pseudo_batch.strong_images[shown],
            pseudo_batch.pseudo_strong[shown],
            pl_module.hparams.class_names,
        )
        step = trainer.global_step
        path = Path(trainer.default_root_dir) / "plots" / "pseudo_labels" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        log_image(trainer.loggers, "pseudo/images", path, step)

    # A resumed run continues the window it was saved in.
    def state_dict(self) -> dict[str, Any]:
        pending = [
            ({f.name: getattr(p, f.name).cpu() for f in fields(p)}, boxes.cpu(), labels.cpu())
            for p, boxes, labels in self.pending
        ]
        return {"pending": pending, "pending_mined": self.pending_mined,
                "updates_seen": self.updates_seen}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = [
            (PseudoLabels(**pseudo), torch.as_tensor(boxes), torch.as_tensor(labels))
            for pseudo, boxes, labels in state_dict["pending"]
        ]
        self.pending_mined = int(state_dict["pending_mined"])
        self.updates_seen = int(state_dict["updates_seen"])
