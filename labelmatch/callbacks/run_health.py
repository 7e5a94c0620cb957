"""Runs that say when they go wrong: three symptoms of a semi-supervised run that is not learning
from its unlabeled images, each reported by one log line when it happens and counted for
`results.json` (README, "Troubleshooting" says what each means and what to try).

- `no_pseudo_labels`: a whole window of semi-supervised steps (an ACT interval, K) in which the
  teacher gave no pseudo box at all: the unsupervised loss is only background.
- `too_many_pseudo_labels`: over such a window, more pseudo boxes (reliable + uncertain) per
  image than `boxes_factor` x the boxes per image the thresholds aim at: the prior of ACT's
  latest refresh (the labeled one by default; an estimate with `method.act.prior=estimated`), or
  the configured one for fixed thresholds.
- `teacher_below_burn_in`: a validation at which the teacher's mAP is below the burn-in model's
  (the model the semi-supervised phase started from).

The pseudo labels, and the prior their thresholds aim at, come from the module's step output
(`outputs["pseudo"]`); the counts are those of this process's share of the unlabeled stream
(every rank reads an equal share).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from labelmatch.callbacks.requirements import EvaluatedModule, LabeledDataModule, require
from labelmatch.method.act import configured_prior

log = logging.getLogger(__name__)

SYMPTOMS = ("no_pseudo_labels", "too_many_pseudo_labels", "teacher_below_burn_in")


class RunHealth(L.Callback):
    """Args:
    window: semi-supervised steps per check of the pseudo-label counts (the ACT interval).
    boxes_factor: pseudo boxes per image above this multiple of the prior's are reported.
    prior: `method.act.prior`, for fixed thresholds (None: the labeled annotations' counts);
        with ACT, each step's pseudo labels carry the prior their thresholds aim at.
    """

    def __init__(
        self, window: int, boxes_factor: float = 3.0, prior: dict | str | None = None
    ) -> None:
        if window < 1 or boxes_factor <= 0:
            raise ValueError(f"need window >= 1 and boxes_factor > 0, got {window}, {boxes_factor}")
        self.window = window
        self.boxes_factor = boxes_factor
        self.manual_prior = prior
        self.prior_boxes_per_image = 0.0
        self.counts = dict.fromkeys(SYMPTOMS, 0)
        self.window_boxes = 0
        self.window_images = 0
        self.window_steps = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, EvaluatedModule, "RunHealth")
        require(trainer.datamodule, LabeledDataModule, "RunHealth")
        prior = configured_prior(trainer.datamodule, self.manual_prior)
        self.prior_boxes_per_image = prior.boxes_per_image

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        pseudo = outputs.get("pseudo") if outputs else None
        if pseudo is None:  # burn-in, or a supervised run
            return
        # A window is one ACT interval, so its steps share one refresh and this aim.
        if pseudo.threshold_prior is not None:
            self.prior_boxes_per_image = pseudo.threshold_prior.boxes_per_image
        self.window_boxes += pseudo.num_pseudo_boxes
        self.window_images += len(pseudo.pseudo_strong)
        self.window_steps += 1
        if self.window_steps == self.window:
            self.check_window(trainer.global_step)

    def check_window(self, step: int) -> None:
        """Report the window that ends at `step`, then start the next one."""
        per_image = self.window_boxes / max(self.window_images, 1)
        limit = self.boxes_factor * self.prior_boxes_per_image
        if self.window_boxes == 0:
            self.report(
                "no_pseudo_labels",
                f"no pseudo labels in the {self.window_steps} steps up to step {step}: the "
                "teacher scores nothing above the thresholds",
            )
        elif per_image > limit:
            self.report(
                "too_many_pseudo_labels",
                f"{per_image:.1f} pseudo boxes per image in the {self.window_steps} steps up to "
                f"step {step}, above {self.boxes_factor:g} x the "
                f"{self.prior_boxes_per_image:.2f} the thresholds aim at",
            )
        self.window_boxes = self.window_images = self.window_steps = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        burn_in = getattr(pl_module, "burn_in_metrics", None)
        teacher = getattr(pl_module, "eval_metrics", {}).get("teacher")
        # Only validations of the training loop: the extra one a run may add after it ends (see
        # labelmatch.run) would be counted again by the run that resumes from that point.
        fitting = getattr(getattr(trainer, "state", None), "fn", "fit") == "fit"  # TrainerFn
        if not fitting or trainer.sanity_checking or burn_in is None or teacher is None:
            return
        if teacher["map"] < burn_in["map"]:
            self.report(
                "teacher_below_burn_in",
                f"teacher mAP {100 * teacher['map']:.1f} at step {trainer.global_step} is below "
                f"the burn-in model's {100 * burn_in['map']:.1f}",
            )

    def report(self, symptom: str, message: str) -> None:
        self.counts[symptom] += 1
        warn_on_rank_zero(f"run health: {message} (README, Troubleshooting: {symptom})")

    # A resumed run keeps its counts and the window it was saved in.
    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "window": [self.window_boxes, self.window_images, self.window_steps],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts.update(state_dict["counts"])
        self.window_boxes, self.window_images, self.window_steps = state_dict["window"]


@rank_zero_only
def warn_on_rank_zero(message: str) -> None:
    """One line from rank zero (the other ranks count the same symptoms)."""
    log.warning(message)
