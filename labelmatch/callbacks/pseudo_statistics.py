"""What the pseudo labels look like during training (the paper's Fig. 4 and 5), as a callback.

Each unsupervised step outputs its pseudo labels and the unlabeled images' ground truth (weak
frame) as `outputs["pseudo"]`, a `PseudoLabelBatch` that also says which thresholds split them
(how many ACT refreshes have set them, and the prior the latest aimed at). The callback counts
them per class and matches them to the ground truth (IoU >= 0.5, same class) in a
`PseudoLabelQuality` metric; every `log_every_n_steps` steps and at each threshold update it logs
the window's measures, summed over the ranks, as `pseudo/*` (see `PseudoLabelQuality.compute`)
and starts a new window. A window holds the pseudo labels of one threshold update (an ACT
refresh; online ACT's queue moves the thresholds between refreshes too): at an update the
window so far is logged against the prior its thresholds aimed at, and the step's own pseudo
labels (split by the new thresholds) open the next one. At each threshold update it
also draws a few strong views with their reliable (green) and uncertain (yellow) pseudo boxes
into `plots/pseudo_labels/step_<step>.png` and hands them to wandb / TensorBoard.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from labelmatch.callbacks.requirements import LabeledDataModule, PseudoLabellingModule, require
from labelmatch.distributed import distributed_rank_and_world_size, gather_saved
from labelmatch.evaluation.pseudo_quality import PseudoLabelQuality
from labelmatch.loggers import log_image
from labelmatch.method.act import ClassPrior, configured_prior
from labelmatch.method.pseudo_labels import PseudoLabelBatch, PseudoLabels
from labelmatch.plots import draw_pseudo_labels

log = logging.getLogger(__name__)


def trained_step(trainer: L.Trainer) -> int:
    """The step of the batch `on_train_batch_end` follows: `global_step` already counts its
    optimiser step there, and Lightning logs the batch's own `self.log` values, and ACT its
    refresh for that batch, one lower. Logged at it, a window's row lines up with them."""
    return trainer.global_step - 1


def threshold_updates(outputs: dict[str, Any] | None, seen: int) -> int:
    """How many times the thresholds of this step's pseudo labels have been set
    (`PseudoLabelBatch.threshold_updates`: ACT refreshes, or 1 for fixed ones); `seen`, the count
    so far, for a step without pseudo labels (burn-in)."""
    pseudo_batch: PseudoLabelBatch | None = outputs.get("pseudo") if outputs else None
    return seen if pseudo_batch is None else pseudo_batch.threshold_updates


class PseudoLabelStatistics(L.Callback):
    """Args:
    prior: `method.act.prior` (None, the official `manual_prior` {"class_ratios": [C floats],
        "boxes_per_image": float}, "estimated" or "oracle"), for runs without ACT. With ACT the
        statistics compare with the prior ACT's latest refresh aimed at, as the step's
        pseudo labels carry it (for "estimated": the latest estimate), so `kl_to_prior`
        measures how well ACT met its own target.
    images_per_update: strong views drawn at each threshold update (0: none drawn).
    """

    def __init__(self, prior: dict | str | None = None, images_per_update: int = 4) -> None:
        self.manual_prior = prior
        self.images_per_update = images_per_update
        self.prior: ClassPrior | None = None
        # The prior of the latest step's thresholds (None: fixed thresholds).
        self.threshold_prior: ClassPrior | None = None
        # The window since the last log, counted (built at setup, knowing the classes).
        self.quality: PseudoLabelQuality | None = None
        self.updates_seen = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        require(pl_module, PseudoLabellingModule, "PseudoLabelStatistics")
        require(datamodule, LabeledDataModule, "PseudoLabelStatistics")
        self.prior = configured_prior(datamodule, self.manual_prior)
        if self.quality is None:  # once: setup("validate") at the run's end keeps the window
            unlabeled = getattr(datamodule, "unlabeled_dataset", None)
            with_ground_truth = unlabeled is not None and sum(unlabeled.class_counts) > 0
            self.quality = PseudoLabelQuality(pl_module.hparams.class_names, with_ground_truth)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run's window compares with the prior of the thresholds it was made under,
        # which the module's checkpoint holds (None: fixed thresholds, the configured prior).
        self.threshold_prior = getattr(pl_module, "threshold_prior", None)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        pseudo_batch: PseudoLabelBatch | None = outputs.get("pseudo") if outputs else None
        updates = threshold_updates(outputs, self.updates_seen)
        updated, self.updates_seen = updates != self.updates_seen, updates
        # The same on every rank (the reduction's collectives).
        logging_now = pl_module.in_semi_supervised_phase and (
            updated or trainer.global_step % trainer.log_every_n_steps == 0
        )
        if logging_now and updated:  # the previous thresholds' window, against their prior
            self.log_window(trainer, pl_module)
        if pseudo_batch is not None:
            self.add(pseudo_batch)
            self.threshold_prior = pseudo_batch.threshold_prior
        if logging_now and not updated:
            self.log_window(trainer, pl_module)
        if updated and pseudo_batch is not None and trainer.is_global_zero:
            self.draw(trainer, pl_module, pseudo_batch)

    def add(self, pseudo_batch: PseudoLabelBatch) -> None:
        """Count one step's pseudo labels (weak frame) against its ground truth."""
        self.quality.update(
            pseudo_batch.pseudo_weak,
            pseudo_batch.gt_weak_boxes,
            pseudo_batch.gt_weak_labels,
            pseudo_batch.num_mined,
        )

    def log_window(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = self.reduce(trainer, pl_module)
        if stats:  # an empty window (the first thresholds' update) logs nothing
            pl_module.log_event(stats, step=trained_step(trainer))

    def reduce(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The window's `pseudo/*` statistics over all ranks; empties the window."""
        # Counted on the CPU; torchmetrics sums over the ranks on their device (NCCL: the GPU).
        if trainer.world_size > 1:
            self.quality.to(pl_module.device)
        prior = self.prior if self.threshold_prior is None else self.threshold_prior
        stats = self.quality.compute(prior) if self.quality.update_called else {}
        self.quality.reset()
        self.quality.to("cpu")
        return {f"pseudo/{name}": value for name, value in stats.items()}

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, pseudo_batch: PseudoLabelBatch
    ) -> None:
        if self.images_per_update <= 0:
            return
        shown = slice(0, self.images_per_update)
        figure = draw_pseudo_labels(
            pseudo_batch.strong_images[shown],
            pseudo_batch.pseudo_strong[shown],
            pl_module.hparams.class_names,
        )
        step = trained_step(trainer)  # the step ACT's refresh log line names
        path = Path(trainer.default_root_dir) / "plots" / "pseudo_labels" / f"step_{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        log_image(trainer.loggers, "pseudo/images", path, step)

    # A resumed run continues the window it was saved in.
    def state_dict(self) -> dict[str, Any]:
        """The window summed over the ranks (called on every rank while a checkpoint is
        assembled; rank 0 writes the file): every count is a sum over the ranks anyway."""
        counts = self.quality.counts() if self.quality is not None else {}
        windows = [window for window in gather_saved(counts) if window]
        total = {name: sum(w[name] for w in windows) for name in windows[0]} if windows else {}
        return {"window_all_ranks": total, "updates_seen": self.updates_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning restores callbacks after `setup`, so the metric exists here. Rank 0 takes
        the whole window back, the other ranks an empty one: their sum is the saved window,
        whatever the number of processes now. Every rank restores (zeros on the others), so
        `update_called` agrees across ranks and all of them join `compute`'s collective (only
        rank 0 did, and a resumed DDP run hung at its first log)."""
        self.updates_seen = int(state_dict["updates_seen"])
        rank, _ = distributed_rank_and_world_size()
        # "window": checkpoints before 2026-12-04, which held rank 0's counts alone.
        window = state_dict.get("window_all_ranks", state_dict.get("window"))
        if window:
            zeros = {name: torch.zeros_like(torch.as_tensor(v)) for name, v in window.items()}
            self.quality.restore(window if rank == 0 else zeros)
        elif state_dict.get("pending"):  # an older checkpoint: the window's pseudo labels
            pseudo, boxes, labels = zip(*state_dict["pending"])
            self.quality.update(
                [PseudoLabels(**p) for p in pseudo],
                [torch.as_tensor(b) for b in boxes],
                [torch.as_tensor(x) for x in labels],
                int(state_dict["pending_mined"]),
            )
