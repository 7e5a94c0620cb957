"""Progress bars: the training bar (`PhaseProgressBar`, Lightning's with the run's phase and
pseudo-label count), and `progress` for the passes Lightning's own bar does not cover (ACT refresh,
burn-in and CLI evaluation, prediction): tqdm on rank zero when stderr is a terminal, silent
otherwise (logs of batch jobs stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

from labelmatch.distributed import distributed_rank_and_world_size

T = TypeVar("T")


def progress(iterable: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    rank, _ = distributed_rank_and_world_size()
    return tqdm(
        iterable,
        desc=description,
        total=total,
        leave=False,
        dynamic_ncols=True,
        disable=rank != 0 or not sys.stderr.isatty(),
    )


class PhaseProgressBar(TQDMProgressBar):
    """Lightning's training bar, saying what the run is doing: the phase (burn-in /
    semi-supervised) and the step count as its description, and as its postfix the loss, the
    latest step's pseudo boxes per image and the teacher's latest val mAP."""

    def __init__(self) -> None:
        super().__init__()
        self.pseudo_per_image: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        pseudo = outputs.get("pseudo") if outputs else None
        if pseudo is not None:
            self.pseudo_per_image = pseudo.num_pseudo_boxes / max(len(pseudo.pseudo_strong), 1)
        if self._train_progress_bar is not None:  # the property raises before it is made
            phase = (
                "semi-supervised"
                if pl_module.in_semi_supervised_phase
                else "burn-in"
                if getattr(pl_module, "semi_supervised", True)
                else "supervised"  # method=supervised: there is no later phase
            )
            self.train_progress_bar.set_description(f"{phase} step", refresh=False)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            shown["loss"] = f"{loss:.3f}"
        if self.pseudo_per_image is not None:
            shown["pseudo/img"] = f"{self.pseudo_per_image:.2f}"
        teacher = getattr(pl_module, "eval_metrics", {}).get("teacher")
        if teacher is not None:
            shown["teacher mAP"] = f"{100 * teacher['map']:.1f}"
        return shown
