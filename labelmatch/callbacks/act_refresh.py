"""ACT refresh (docs/method.md §2, Eq. 5-6) as a Lightning callback.

Before the first semi-supervised step and then every `interval` steps, the teacher predicts on a
freshly shuffled random subset of the unlabeled images; per class, its sorted post-NMS scores and
the labeled class prior (or the one `prior` selects) give the reliable and uncertain thresholds,
handed to the module with that prior (`set_thresholds`), which checkpoints and restores both.

`mode="online"` is the official online variant instead: the refresh pass runs once, before the
first semi-supervised step, to initialise; from then on the thresholds come from a bounded queue
of the teacher's top scores on the pseudo-labelling batches themselves (`ScoreQueue`, gathered
over ranks, checkpointed with this callback's state), recomputed every `online_interval` steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from labelmatch.callbacks.requirements import (
    CalibratingDataModule,
    ThresholdedModule,
    UnlabeledDataModule,
    require,
)
from labelmatch.data.samplers import Stream, stream_seed
from labelmatch.distributed import gather_rows
from labelmatch.errors import ConfigError
from labelmatch.method.act import (
    ESTIMATED,
    ClassPrior,
    ScoreQueue,
    TeacherDetections,
    act_thresholds,
    check_prior_setting,
    configured_prior,
    estimated_class_prior,
    label_shift_test,
    labeled_class_prior,
    online_act_thresholds,
    scores_by_class,
    top_scores_per_image,
    unlabeled_class_prior,
)
from labelmatch.method.module import precision_context
from labelmatch.method.pseudo_labels import count_by_thresholds
from labelmatch.method.teacher import (
    PSEUDO_LABEL_SCORE_FLOOR,
    check_above_pseudo_label_floor,
    score_floor,
)
from labelmatch.progress import progress

log = logging.getLogger(__name__)


class ACTRefresh(L.Callback):
    """Args:
    interval: K, steps between refreshes (official 1000).
    subset: reference images per refresh (official 10000), capped at the unlabeled set's size.
    alpha: reliable share of the expected positives (Eq. 6, official 0.2).
    min_threshold: floor of both thresholds (official 0.05).
    prior: None to count the labeled annotations, the official `manual_prior`
        {"class_ratios": [C floats], "boxes_per_image": float}, "oracle" (the unlabeled
        annotations' counts, reference runs only) or "estimated" (at each refresh pass, the
        unlabeled set's prior estimated from the teacher's detections, docs/method.md §2).
    estimator_iterations, estimator_tolerance: the EM's limits (`em_label_shift`).
    estimator_calibrate: calibrate the estimate on a pass over labeled images (up to `subset`).
    estimator_min_score: the estimate reads only detections scoring at least this (0: all; the
        default 0.3 is conf/method/labelmatch.yaml's, docs/method.md §2).
    shift_test_level: with prior="estimated", aim at the labeled prior at a refresh unless
        `label_shift_test` at this level detects a shift (docs/method.md §2 "Shift test"; the
        default 0.05 is conf/method/labelmatch.yaml's); None aims at every estimate. Read only
        with prior="estimated", as the other estimator settings.
    shift_test_resamples: the test's bootstrap resamples.
    mode: "offline" (a refresh pass every `interval` steps) or "online" (a score queue).
    queue_images, queue_top_k: online queue size, images x scores per class (official 12800, 20).
    online_interval: steps between threshold updates from the queue (online mode).
    """

    MODES = ("offline", "online")

    def __init__(
        self,
        interval: int = 1000,
        subset: int = 10000,
        alpha: float = 0.2,
        min_threshold: float = 0.05,
        prior: dict | str | None = None,
        mode: str = "offline",
        queue_images: int = 12800,
        queue_top_k: int = 20,
        online_interval: int = 1,
        estimator_iterations: int = 100,
        estimator_tolerance: float = 1e-6,
        estimator_calibrate: bool = True,
        estimator_min_score: float = 0.3,
        shift_test_level: float | None = 0.05,
        shift_test_resamples: int = 200,
    ) -> None:
        if mode not in self.MODES:
            raise ConfigError(f"method.act.mode must be one of {self.MODES}, got {mode!r}")
        if not 0 <= alpha <= 1:  # Eq. 6: a share of the expected boxes
            raise ConfigError(
                f"method.alpha must lie in [0, 1] (the reliable share of each class's expected "
                f"boxes, Eq. 6), got {alpha}"
            )
        for key, value in (("interval", interval), ("subset", subset)):
            if not (isinstance(value, int) and value >= 1):  # a 0 subset failed at the refresh
                raise ConfigError(f"method.act.{key} must be a whole number >= 1, got {value!r}")
        check_prior_setting(prior)  # here, before the data is read
        check_above_pseudo_label_floor(
            f"method.act.min_threshold={min_threshold} is",
            min_threshold < PSEUDO_LABEL_SCORE_FLOOR,
        )
        self.mode = mode
        self.queue_images = queue_images
        self.queue_top_k = queue_top_k
        self.online_interval = online_interval
        self.queue: ScoreQueue | None = None
        self.interval = interval
        self.subset = subset
        self.alpha = alpha
        self.min_threshold = min_threshold
        self.prior_setting = prior
        self.estimator_iterations = estimator_iterations
        self.estimator_tolerance = estimator_tolerance
        self.estimator_calibrate = estimator_calibrate
        if not 0 <= estimator_min_score < 1:
            raise ConfigError(
                f"method.act.estimator.min_score must lie in [0, 1), got {estimator_min_score}"
            )
        self.estimator_min_score = estimator_min_score
        if shift_test_level is not None and not 0 < shift_test_level < 1:
            raise ConfigError(
                f"method.act.estimator.shift_test_level must be null or lie in (0, 1), got "
                f"{shift_test_level}"
            )
        if not (isinstance(shift_test_resamples, int) and shift_test_resamples >= 2):
            raise ConfigError(
                f"method.act.estimator.shift_test_resamples must be a whole number >= 2, got "
                f"{shift_test_resamples!r}"
            )
        self.shift_test_level = shift_test_level
        self.shift_test_resamples = shift_test_resamples
        # The configured prior (the labeled one for null and "estimated"). An estimate is not
        # kept here: it goes to the module with the thresholds it gave (`set_thresholds`), which
        # checkpoints it as `threshold_prior`, the one home of the prior they aim at.
        self.prior: ClassPrior | None = None
        self.labeled_prior: ClassPrior | None = None  # where each estimate starts
        self.legacy_estimate: ClassPrior | None = None  # an older checkpoint's, see on_train_start
        # The unlabeled annotations' prior, logged beside an estimate when the json has them.
        self.ground_truth_prior: ClassPrior | None = None

    @property
    def estimates(self) -> bool:
        return self.prior_setting == ESTIMATED

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, ThresholdedModule, "ACTRefresh")
        require(trainer.datamodule, UnlabeledDataModule, "ACTRefresh")
        if self.estimates and self.estimator_calibrate:
            require(trainer.datamodule, CalibratingDataModule, "ACTRefresh")
        self.labeled_prior = labeled_class_prior(trainer.datamodule)
        self.prior = configured_prior(trainer.datamodule, self.prior_setting)
        if self.prior_setting is not None:
            try:
                self.ground_truth_prior = unlabeled_class_prior(trainer.datamodule)
            except ValueError:  # no annotations in the unlabeled json: nothing to compare with
                self.ground_truth_prior = None
        if len(self.prior.class_ratios) != len(pl_module.reliable_thresholds):
            raise ConfigError(
                f"method.act.prior has {len(self.prior.class_ratios)} classes, the data has "
                f"{len(pl_module.reliable_thresholds)}"
            )
        if self.mode == "online" and self.queue is None:  # not if a checkpoint restored it
            self.queue = ScoreQueue(self.queue_images, self.prior.num_classes, self.queue_top_k)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A checkpoint written before the module kept the prior (`threshold_prior`) carried the
        # latest estimate in this callback's state: it goes where it lives now.
        if self.legacy_estimate is not None and pl_module.threshold_prior is None:
            pl_module.threshold_prior = self.legacy_estimate
        self.legacy_estimate = None

    def aimed_prior(self, pl_module: L.LightningModule) -> ClassPrior:
        """The prior Eq. 5-6 aim at between refreshes (online ACT's queue updates): with
        prior=estimated the latest estimate, which the module keeps (and a resumed run restores),
        else the configured one."""
        if self.estimates and pl_module.threshold_prior is not None:
            return pl_module.threshold_prior
        return self.prior

    def is_refresh_step(self, step: int, burn_in_steps: int) -> bool:
        if self.mode == "online":  # the refresh pass only initialises the queue
            return step == burn_in_steps
        return step >= burn_in_steps and (step - burn_in_steps) % self.interval == 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if not self.is_refresh_step(pl_module.global_step, pl_module.burn_in_steps):
            return
        if not bool(pl_module.teacher_ready):  # the module switches before this step's hooks
            raise RuntimeError(
                f"ACTRefresh: the teacher is not ready at step {pl_module.global_step} (burn-in "
                f"ends at step {pl_module.burn_in_steps}); the module should have copied it from "
                "the student (LabelMatchModule.start_semi_supervised) before this step"
            )
        self.refresh(trainer, pl_module)

    def refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        started = time.perf_counter()
        datamodule = trainer.datamodule
        num_images = min(self.subset, len(datamodule.unlabeled_dataset))
        loader = datamodule.reference_dataloader(num_images, pl_module.global_step)
        loader = progress(loader, f"ACT refresh at step {pl_module.global_step}")
        detections = teacher_detections(pl_module, loader, with_class_scores=self.estimates)
        labels, scores = (gather_rows(trainer, t) for t in concatenate(detections))
        prior = self.prior
        if self.estimates:
            prior = self.estimate_prior(trainer, pl_module, detections, labels, scores, num_images)
        names = pl_module.hparams.class_names
        metrics = prior_metrics(names, prior)
        if self.prior_setting is not None:  # ACT aims elsewhere: keep the labeled one to compare
            metrics.update(prior_metrics(names, self.labeled_prior, "labeled_prior"))
            if self.ground_truth_prior is not None:  # for the record only; ACT never reads it
                metrics.update(prior_metrics(names, self.ground_truth_prior, "unlabeled_prior"))
        pl_module.log_event(metrics)
        if self.mode == "online":  # the reference pass fills the queue; Eq. 5-6 on the queue
            self.push(trainer, detections)
            reliable, uncertain = self.queue_thresholds(prior)
        else:
            num_classes = len(pl_module.reliable_thresholds)
            reliable, uncertain = act_thresholds(
                scores_by_class(labels, scores, num_classes),
                num_images=num_images,
                prior=prior,
                alpha=self.alpha,
                min_threshold=self.min_threshold,
            )
        # With the prior they aim at: the module passes both on with each step's pseudo labels.
        pl_module.set_thresholds(reliable, uncertain, prior)
        log_thresholds(pl_module, names, reliable, uncertain)
        num_reliable, num_uncertain = count_by_thresholds(labels, scores, reliable, uncertain)
        log.info(
            "ACT refresh %d at step %d on %d images: reliable %.3f-%.3f, uncertain %.3f-%.3f; "
            "per image %.2f reliable + %.2f uncertain pseudo boxes (prior %.2f)",
            int(pl_module.threshold_refreshes),
            pl_module.global_step,
            num_images,
            reliable.min(),
            reliable.max(),
            uncertain.min(),
            uncertain.max(),
            num_reliable / num_images,
            num_uncertain / num_images,
            prior.boxes_per_image,
        )
        # What the pass costs the run, on its own line: the line above is compared across ranks
        # and across a resume, so it holds nothing that depends on the machine.
        seconds = time.perf_counter() - started
        pl_module.log_event({"act/refresh_seconds": seconds})
        log.info("ACT reference pass: %d images in %.1f s", num_images, seconds)

    def estimate_prior(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        detections: list[dict[str, Tensor]],
        labels: Tensor,
        scores: Tensor,
        num_images: int,
    ) -> ClassPrior:
        """The unlabeled prior estimated from this pass's detections (all ranks), started from
        the labeled prior; with `estimator_calibrate`, after the same pass on as many of the
        datamodule's `calibration_images` (a calibration split the teacher never trains on, or
        the labeled images), fitted to their prior. The labeled prior itself when no detection
        reaches the estimator's score floor."""
        unlabeled = TeacherDetections(
            labels,
            scores,
            gather_rows(trainer, class_score_rows(detections, self.prior.num_classes)),
            num_images,
            image_index_of(trainer, detections),
        )
        calibration, calibration_prior = None, None
        if self.estimator_calibrate:
            datamodule = trainer.datamodule
            count = min(self.subset, len(datamodule.calibration_images))
            loader = datamodule.calibration_dataloader(count, pl_module.global_step)
            loader = progress(loader, f"ACT calibration at step {pl_module.global_step}")
            calibration = detections_on(trainer, pl_module, loader, count)
            calibration_prior = datamodule.calibration_class_prior
            pl_module.log_event({"act/calibration_images": count})
        prior, iterations = estimated_class_prior(
            unlabeled,
            self.labeled_prior,
            calibration,
            self.estimator_iterations,
            self.estimator_tolerance,
            self.estimator_min_score,
            calibration_prior,
        )
        if iterations == 0:  # no detection to estimate from: Eq. 5-6 keep the labeled prior
            log.warning(
                "ACT estimate at step %d: no reference detection scores at least "
                "method.act.estimator.min_score=%g on %d images; the labeled prior is kept",
                pl_module.global_step,
                self.estimator_min_score,
                num_images,
            )
            if self.shift_test_level is not None:  # nothing to test: no shift detected
                pl_module.log_event(
                    {"act/shift_test/statistic": 0.0, "act/shift_test/detected": 0.0}
                )
            return prior
        log.info(
            "ACT estimated prior at step %d: %.2f boxes per image (labeled %.2f), class shares "
            "%s after %d EM iterations",
            pl_module.global_step,
            prior.boxes_per_image,
            self.labeled_prior.boxes_per_image,
            ", ".join(f"{r:.3f}" for r in prior.class_ratios.tolist()),
            iterations,
        )
        if self.shift_test_level is None:
            return prior
        # The estimate is logged whether or not ACT aims at it (act/prior/* is the aim).
        pl_module.log_event(prior_metrics(pl_module.hparams.class_names, prior, "estimated_prior"))
        if self.shift_detected(trainer, pl_module, unlabeled, calibration, calibration_prior):
            return prior
        return self.labeled_prior

    def shift_detected(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        unlabeled: TeacherDetections,
        calibration: TeacherDetections | None,
        calibration_prior: ClassPrior | None,
    ) -> bool:
        """`label_shift_test` on the estimate's inputs, its resamples drawn from the run's
        SHIFT_TEST stream at this step (the same on every rank and after a resume); logged."""
        generator = torch.Generator()
        step = pl_module.global_step
        generator.manual_seed(stream_seed(trainer.datamodule.seed, Stream.SHIFT_TEST, step))
        test = label_shift_test(
            unlabeled,
            self.labeled_prior,
            generator,
            calibration,
            calibration_prior,
            self.shift_test_level,
            self.shift_test_resamples,
            self.estimator_iterations,
            self.estimator_tolerance,
            self.estimator_min_score,
        )
        pl_module.log_event(
            {
                "act/shift_test/statistic": test.statistic,
                "act/shift_test/critical": test.critical,
                "act/shift_test/detected": float(test.detected),
            }
        )
        log.info(
            "ACT shift test at step %d: max |z| %.2f %s %.2f (level %g): %s",
            step,
            test.statistic,
            ">" if test.detected else "<=",
            test.critical,
            self.shift_test_level,
            "ACT aims at the estimate" if test.detected else "ACT keeps the labeled prior",
        )
        return test.detected

    # ------------------------------------------------------------------------ online mode
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        # The teacher's detections on this step's weak views (the step's output; absent during
        # burn-in).
        detections = outputs.get("teacher_detections") if outputs else None
        if self.mode != "online" or detections is None:
            return
        self.push(trainer, detections)
        steps = pl_module.global_step - pl_module.burn_in_steps  # the optimiser step is counted
        if steps % self.online_interval == 0:
            reliable, uncertain = self.queue_thresholds(self.aimed_prior(pl_module))
            pl_module.set_thresholds(reliable, uncertain)
            if pl_module.global_step % trainer.log_every_n_steps == 0:
                log_thresholds(pl_module, pl_module.hparams.class_names, reliable, uncertain)

    def push(self, trainer: L.Trainer, detections: list[dict[str, Tensor]]) -> None:
        """Each image's per-class top scores into the queue, from every rank."""
        rows = top_scores_per_image(detections, self.prior.num_classes, self.queue_top_k)
        self.queue.push(gather_rows(trainer, rows))

    def queue_thresholds(self, prior: ClassPrior) -> tuple[Tensor, Tensor]:
        return online_act_thresholds(self.queue, prior, self.alpha, self.min_threshold)

    # ------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        # The thresholds, their refresh count and the prior they aim at are the module's state.
        return {"queue": self.queue.state_dict()} if self.queue is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Older checkpoints: "refreshes" is the module's `threshold_refreshes` now, and "prior"
        # (the latest estimate) its `threshold_prior`, which on_train_start fills from it.
        if "prior" in state_dict:
            self.legacy_estimate = ClassPrior.from_state_dict(state_dict["prior"])
        if "queue" not in state_dict:
            return
        saved = state_dict["queue"]["scores"]
        if self.queue is None:  # Lightning may restore before setup
            self.queue = ScoreQueue(saved.shape[1], saved.shape[0], saved.shape[2])
        self.queue.load_state_dict(state_dict["queue"])


# The official refresh pass uses the test-time score floor of 0.001 (docs/method.md §2); it matters
# when a class has fewer detections than the rank looked up, which then clamps to the last one.
# The model's own floor is that value too (labelmatch/models/faster_rcnn.py); set here as well so
# that a model built with another box_score_thresh still refreshes at the official floor.
REFRESH_SCORE_FLOOR = 0.001


def teacher_detections(
    pl_module: L.LightningModule, loader, with_class_scores: bool = False
) -> list[dict[str, Tensor]]:
    """Post-NMS labels [N] and scores [N] of each image, the teacher (eval mode) over a loader;
    `with_class_scores`: also "class_scores" [N, C + 1], each detection's whole softmax row
    (background first), which the estimated prior needs (see `keeping_class_scores`).

    Under inference mode and the trainer's precision (autocast with bf16-mixed / 16-mixed), as
    Lightning runs validation, so the refresh costs what plain inference costs.
    """
    detections = []
    rows: list[Tensor] = []
    roi_heads = pl_module.teacher.roi_heads
    if with_class_scores:  # an instance attribute shadows the method until deleted below
        roi_heads.postprocess_detections = keeping_class_scores(
            roi_heads.postprocess_detections, rows
        )
    try:
        with (
            torch.inference_mode(),
            precision_context(pl_module),
            score_floor(roi_heads, REFRESH_SCORE_FLOOR),
        ):
            for batch in loader:
                if not batch["images"]:  # every image unreadable and dropped (skip_invalid)
                    continue
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                for output in pl_module.teacher(batch["images"]):
                    detections.append({"labels": output["labels"], "scores": output["scores"]})
    finally:
        if with_class_scores:
            del roi_heads.postprocess_detections
    for detection, image_rows in zip(detections, rows):
        detection["class_scores"] = image_rows
    return detections


def keeping_class_scores(postprocess, sink: list[Tensor]):
    """torchvision's `RoIHeads.postprocess_detections`, unchanged, that also appends to `sink`
    each image's float32[N, C + 1] softmax rows of its kept detections.

    torchvision flattens the per-class scores before NMS and returns only each detection's own
    class score; the row it came from is found again as the proposal whose softmax gives that
    score for that class (the same softmax of the same logits, so the match is exact; two
    proposals with equal scores for a class are near-duplicates with near-equal rows).
    """

    def postprocess_keeping_rows(class_logits, box_regression, proposals, image_shapes):
        boxes, scores, labels = postprocess(class_logits, box_regression, proposals, image_shapes)
        softmax = F.softmax(class_logits.float(), -1).split([len(p) for p in proposals])
        for image_rows, image_scores, image_labels in zip(softmax, scores, labels):
            # [detections, proposals]: each proposal's score for each detection's class
            gap = (image_rows[:, image_labels].T - image_scores.float()[:, None]).abs()
            sink.append(image_rows[gap.argmin(dim=1)] if len(image_labels) else image_rows[:0])
        return boxes, scores, labels

    return postprocess_keeping_rows


def class_score_rows(detections: list[dict[str, Tensor]], num_classes: int) -> Tensor:
    """All images' "class_scores" rows float32[N, C + 1] in one tensor (also for no image: a
    rank without images still gathers rows of the right width)."""
    rows = [d["class_scores"].float() for d in detections]
    return torch.cat(rows) if rows else torch.zeros(0, num_classes + 1)


def detections_on(
    trainer: L.Trainer | None, pl_module: L.LightningModule, loader, num_images: int
) -> TeacherDetections:
    """The teacher's detections with their softmax rows over a loader of `num_images` images,
    every rank's share gathered (no trainer: one process)."""
    detections = teacher_detections(pl_module, loader, with_class_scores=True)
    labels, scores = concatenate(detections)
    rows = class_score_rows(detections, len(pl_module.reliable_thresholds))
    if trainer is not None:
        labels, scores, rows = (gather_rows(trainer, t) for t in (labels, scores, rows))
    return TeacherDetections(labels, scores, rows, num_images, image_index_of(trainer, detections))


def image_index_of(trainer: L.Trainer | None, detections: list[dict[str, Tensor]]) -> Tensor:
    """int64[N]: the image of each detection of every rank's images in gathered order (ranks
    in order, each rank's images in order), as `gather_rows` concatenates their rows."""
    counts = torch.tensor([len(d["labels"]) for d in detections], dtype=torch.long)
    if trainer is not None:
        counts = gather_rows(trainer, counts)
    return torch.repeat_interleave(torch.arange(len(counts)), counts)


def concatenate(detections: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """All images' labels [N] and scores [N] in one pair of tensors."""
    if not detections:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    labels = torch.cat([d["labels"] for d in detections])
    return labels, torch.cat([d["scores"] for d in detections]).float()


def log_thresholds(
    pl_module: L.LightningModule, names: Sequence[str], reliable: Tensor, uncertain: Tensor
) -> None:
    metrics = {f"act/reliable/{name}": float(t) for name, t in zip(names, reliable)}
    metrics.update({f"act/uncertain/{name}": float(t) for name, t in zip(names, uncertain)})
    metrics["act/threshold_version"] = int(pl_module.threshold_version)
    pl_module.log_event(metrics)


def prior_metrics(names: Sequence[str], prior: ClassPrior, kind: str = "prior") -> dict[str, float]:
    """`act/<kind>/<class>` and `act/<kind>/boxes_per_image`; kind "prior": the prior Eq. 5-6
    use at this refresh, "labeled_prior": the labeled boxes' counts, "unlabeled_prior": the
    unlabeled annotations' counts (the oracle)."""
    metrics = {f"act/{kind}/{name}": float(r) for name, r in zip(names, prior.class_ratios)}
    metrics[f"act/{kind}/boxes_per_image"] = float(prior.boxes_per_image)
    return metrics
