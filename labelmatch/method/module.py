"""The LightningModule: a student detector and its EMA teacher (docs/method.md §1).

`training_step` reads as the method does: supervised loss on the labeled batch -> the teacher
pseudo-labels the weak views -> the labels move to the strong views -> the student's
unsupervised loss. `method.name` picks supervised, mean_teacher (one fixed threshold) or
labelmatch; the unlabeled branch's loss is an `UnlabeledCriterion` built once from the method
config (RPLM included, `method.rplm.enabled`); ACT thresholds are set from a callback
through `set_thresholds`; the burn-in -> semi-supervised switch is the module's alone.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchvision.models.detection import FasterRCNN

from labelmatch.data.class_prior import ClassPrior
from labelmatch.data.errors import DataError
from labelmatch.data.geometry import map_boxes, weak_to_strong
from labelmatch.distributed import gather_predictions
from labelmatch.errors import ConfigError
from labelmatch.evaluation.coco_eval import evaluate_coco, to_coco_results, write_results
from labelmatch.method.criterion import UnlabeledCriterion
from labelmatch.method.ema import copy_weights, ema_update
from labelmatch.method.errors import NonFiniteLossError
from labelmatch.method.pseudo_labels import (
    PseudoLabelBatch,
    map_pseudo_labels,
    merge_uncertain_into_reliable,
    split_batch_by_thresholds,
)
from labelmatch.method.teacher import (
    PSEUDO_LABEL_SCORE_FLOOR,
    check_above_pseudo_label_floor,
    teacher_forward,
)
from labelmatch.models.transform import PreResizedTransform
from labelmatch.optim import build_sgd
from labelmatch.progress import progress

log = logging.getLogger(__name__)

METHODS = ("supervised", "mean_teacher", "labelmatch")


def check_detector(detector: FasterRCNN, num_classes: int, semi_supervised: bool) -> None:
    """ConfigError, before any step, for a detector the method cannot use as it is:

    * a box predictor without C + 1 class outputs (background included): torchvision's builders
      count background in `num_classes`, the project's count foreground classes only, and the
      mismatch surfaced as "IndexError: Target C is out of bounds" inside the first step;
    * in a semi-supervised run, a transform other than `PreResizedTransform`: the teacher's pass
      and the unlabeled criterion call the detector's parts without its postprocess, so a
      resizing transform (torchvision's default) would put pseudo labels, teacher features and
      the student's RPN targets in different frames, without any error.
    """
    cls_score = getattr(detector.roi_heads.box_predictor, "cls_score", None)
    outputs = getattr(cls_score, "out_features", None)
    if outputs is not None and outputs != num_classes + 1:
        raise ConfigError(
            f"the detector's box predictor has {outputs} class outputs, the data has "
            f"{num_classes} classes (+ background = {num_classes + 1}); model builders get "
            "num_classes = foreground classes only (torchvision's own builders count background: "
            "wrap one so that it gets num_classes + 1)"
        )
    if semi_supervised and not isinstance(detector.transform, PreResizedTransform):
        raise ConfigError(
            f"the detector's transform is {type(detector.transform).__name__}, not "
            "PreResizedTransform: a semi-supervised run needs a model that never resizes "
            "(labelmatch/models/transform.py; the data pipeline sizes the views), or pseudo "
            "labels land in the wrong frame. Build it with a labelmatch.models.faster_rcnn builder"
        )


class LabelMatchModule(L.LightningModule):
    """Student + EMA teacher. Only the student is optimised; the teacher labels in eval mode.

    Args:
        detector: the student, a torchvision FasterRCNN (the teacher is a deep copy).
        method: the `method` config (name, burn_in_steps, ema_momentum, unsup_weight, ...).
        optim: the `optim` config (see `labelmatch.optim.build_sgd`).
        class_names: C foreground class names, index = label - 1.
        category_ids: the dataset's category id of each label, index = label - 1.
        val_json: COCO annotations the validation split is scored against.
        criterion: the unlabeled branch's loss, as Hydra builds it from `method.criterion`
            (`run.py`); None builds the same from the method's keys
            (`UnlabeledCriterion.from_method_config`: a checkpoint's saved hparams, tests).
    """

    def __init__(
        self,
        detector: FasterRCNN,
        method: dict[str, Any],
        optim: dict[str, Any],
        class_names: list[str],
        category_ids: list[int],
        val_json: str,
        model_config: dict[str, Any] | None = None,
        criterion: UnlabeledCriterion | None = None,
    ) -> None:
        super().__init__()
        if method["name"] not in METHODS:
            raise ConfigError(f"method.name must be one of {METHODS}, got {method['name']!r}")
        check_detector(detector, len(class_names), method["name"] != "supervised")
        self.save_hyperparameters(ignore=["detector", "criterion"])
        self.student = detector
        self.method = method
        self.semi_supervised = method["name"] != "supervised"
        self.burn_in_steps = int(method.get("burn_in_steps", 0)) if self.semi_supervised else 0
        self.teacher: FasterRCNN | None = None
        # L_u (docs/method.md §3-4), built once; its config validates the method keys it reads.
        self.criterion: UnlabeledCriterion | None = None
        num_classes = len(class_names)
        fixed = method.get("fixed_thresholds", {"reliable": 1.0, "uncertain": 1.0})
        low = {name: value for name, value in fixed.items() if value < PSEUDO_LABEL_SCORE_FLOOR}
        check_above_pseudo_label_floor(
            f"method.fixed_thresholds {low}", self.semi_supervised and bool(low)
        )
        # Buffers, so that thresholds and the teacher's state travel with checkpoints.
        self.register_buffer("reliable_thresholds", torch.full((num_classes,), fixed["reliable"]))
        self.register_buffer("uncertain_thresholds", torch.full((num_classes,), fixed["uncertain"]))
        self.register_buffer("teacher_ready", torch.tensor(False))
        # How many times `set_thresholds` has changed them (0: the fixed ones), and how many of
        # those were ACT refreshes (a prior aimed at); checkpointed.
        self.register_buffer("threshold_version", torch.tensor(0))
        self.register_buffer("threshold_refreshes", torch.tensor(0))
        self.register_load_state_dict_pre_hook(fill_threshold_counts)
        # The class prior the latest refresh aimed at (None: fixed thresholds); checkpointed in
        # `on_save_checkpoint`, outside the state dict, so a half-precision cast leaves it whole.
        self.threshold_prior: ClassPrior | None = None
        if self.semi_supervised:
            if criterion is None:  # a checkpoint's saved hparams, tests: the same from the keys
                criterion = UnlabeledCriterion.from_method_config(method)
            self.criterion = criterion
            self.teacher = copy.deepcopy(detector).requires_grad_(False).eval()
        self.burn_in_metrics: dict[str, Any] | None = None
        self.eval_metrics: dict[str, dict[str, Any]] = {}
        self.last_eval_step = -1
        self._predictions: dict[str, list[dict[str, Tensor]]] = {}

    # ----------------------------------------------------------------------------- phases
    def train(self, mode: bool = True) -> LabelMatchModule:
        """The teacher always stays in eval mode (test-time RPN/ROI settings, BN statistics)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @property
    def in_semi_supervised_phase(self) -> bool:
        return self.semi_supervised and self.global_step >= self.burn_in_steps

    def on_fit_start(self) -> None:
        init_from = self.method.get("init_from")
        # A resumed run (ckpt_path) already holds its weights; `global_step` is only restored
        # after this hook, so the trainer's ckpt_path is what tells.
        if self.semi_supervised and init_from and self.trainer.ckpt_path is None:
            load_student_weights(self.student, init_from)

    def start_semi_supervised(self) -> None:
        """The switch out of burn-in: teacher := student, and the burn-in model is evaluated
        (logged as `burn_in/map` at the first semi-supervised step).

        The module is its only caller in training: after the last burn-in step's optimiser step
        (`optimizer_step`), or at `on_train_start` for a run that starts at or after the switch
        (`burn_in_steps=0` with `method.init_from`, a resumed run). Idempotent (guarded by the
        checkpointed `teacher_ready`), so callbacks that need the teacher only check that flag.
        """
        if self.teacher is None or bool(self.teacher_ready):
            return
        copy_weights(self.teacher, self.student)
        self.teacher_ready.fill_(True)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            # Reuse Lightning's val loader when validation has run: a new one would start (and,
            # being persistent, keep) another set of worker processes.
            val_loader = self.trainer.val_dataloaders or datamodule.val_dataloader()
            self.burn_in_metrics = self.evaluate_loader(self.student, val_loader)
            self.log_event({"burn_in/map": self.burn_in_metrics["map"]}, step=self.burn_in_steps)
            log.info(
                "burn-in done at step %d: mAP %.4f",
                self.burn_in_steps,
                self.burn_in_metrics["map"],
            )

    def set_thresholds(
        self, reliable: Tensor, uncertain: Tensor, prior: ClassPrior | None = None
    ) -> None:
        """The one way thresholds change (ACT refreshes and online updates, docs/method.md §2):
        reliable, uncertain [C] in [0, 1] are copied into the checkpointed buffers and
        `threshold_version` goes up by one. With `prior`, the class prior Eq. 5-6 aimed them
        at, it is a refresh: `threshold_refreshes` goes up by one and the prior is kept as
        `threshold_prior`; without (online ACT's queue updates), the last refresh's aim stays.
        Each step's `PseudoLabelBatch` carries both to the callbacks."""
        for name, value in (("reliable", reliable), ("uncertain", uncertain)):
            if value.shape != self.reliable_thresholds.shape:
                raise ValueError(
                    f"{name} thresholds {tuple(value.shape)} must be "
                    f"[{len(self.reliable_thresholds)}], one per class"
                )
            if not bool(((value >= 0) & (value <= 1)).all()):  # NaN fails too
                raise ValueError(f"{name} thresholds must lie in [0, 1], got {value.tolist()}")
        if prior is not None and prior.num_classes != len(self.reliable_thresholds):
            raise ValueError(
                f"the prior has {prior.num_classes} classes, the thresholds "
                f"{len(self.reliable_thresholds)}"
            )
        self.reliable_thresholds.copy_(reliable)
        self.uncertain_thresholds.copy_(uncertain)
        self.threshold_version.add_(1)
        if prior is not None:
            self.threshold_refreshes.add_(1)
            self.threshold_prior = prior

    def log_event(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log values that change at events (burn-in end, ACT refresh) once, at this step (or
        `step`).

        `self.log` inside batch hooks would repeat them on every logged step until the next
        event; the loggers themselves write on rank zero only.
        """
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step if step is None else step)

    def on_train_start(self) -> None:
        # A run that starts in the semi-supervised phase (burn_in_steps=0 with init_from, or
        # resumed at or after the switch: then `teacher_ready` is already restored and this does
        # nothing). Lightning's sanity validation has run before this hook, on the student only.
        if self.in_semi_supervised_phase:
            self.start_semi_supervised()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # EMA after the optimiser step, every step of the semi-supervised phase (docs/method.md §1).
        # Here rather than in on_train_batch_end, which runs after the callbacks' hooks: a
        # checkpoint saved there would miss this step's update.
        if self.teacher is not None and bool(self.teacher_ready):
            ema_update(self.teacher, self.student, self.method["ema_momentum"])
        # The switch right after the last burn-in step (`global_step` counts this step only once
        # the hook returns), so the teacher exists before any hook of the first semi-supervised
        # step: Lightning runs the callbacks' `on_train_batch_start` before the module's, and ACT
        # refreshes there. Not when the run ends here: no semi-supervised step would follow.
        step = self.global_step + 1
        if self.semi_supervised and step == self.burn_in_steps and step != self.trainer.max_steps:
            self.start_semi_supervised()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["burn_in_metrics"] = self.burn_in_metrics
        if self.threshold_prior is not None:
            checkpoint["threshold_prior"] = self.threshold_prior.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.burn_in_metrics = checkpoint.get("burn_in_metrics")
        saved = checkpoint.get("threshold_prior")  # absent: fixed thresholds, or an older run
        if saved is not None:
            self.threshold_prior = ClassPrior.from_state_dict(saved)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The step's loss, and what callbacks read of the step (Lightning hands this dict to
        their `on_train_batch_end` as `outputs`): in the semi-supervised phase, `pseudo` (the
        step's `PseudoLabelBatch`) and `teacher_detections` (the teacher's post-NMS detections on
        the weak views, one dict per image)."""
        labeled = batch["labeled"]
        self.check_not_emptied(batch)
        supervised = self.student(labeled["images"], detector_targets(labeled["targets"]))
        loss = sum(supervised.values())
        logs = {f"train/sup/{name}": value for name, value in supervised.items()}
        logs["train/sup_loss"] = loss
        output: dict[str, Any] = {}

        if self.in_semi_supervised_phase:
            unsupervised, output["pseudo"], output["teacher_detections"] = self.unsupervised_step(
                batch["unlabeled"]
            )
            unsup_loss = sum(unsupervised.values())
            loss = loss + self.method["unsup_weight"] * unsup_loss
            logs.update({f"train/unsup/{name}": value for name, value in unsupervised.items()})
            logs["train/unsup_loss"] = unsup_loss
        logs["train/loss"] = loss
        self.stop_if_not_finite(loss, logs)
        batch_size = len(labeled["images"])
        # sync_dist: under DDP the logged values are means over the ranks.
        self.log_dict(logs, batch_size=batch_size, sync_dist=True)
        return {"loss": loss, **output}

    def check_not_emptied(self, batch: dict[str, Any]) -> None:
        """DataError on every rank when `data.skip_invalid` left a batch this step needs without
        any image on any rank (every image of it unreadable): torchvision's detector and the
        view stacking would fail on it with an IndexError naming nothing. Decided over the ranks
        (one rank raising alone left the others waiting in the gradient all-reduce)."""
        needed = {"labeled": batch["labeled"]["images"]}
        if self.in_semi_supervised_phase:
            needed["unlabeled"] = batch["unlabeled"]["weak"]
        emptied = [name for name, images in needed.items() if len(images) == 0]
        anywhere = bool(emptied)
        if self._trainer is not None and self.trainer.world_size > 1:
            anywhere = self.trainer.strategy.reduce_boolean_decision(anywhere, all=False)
        if anywhere:
            where = f"the {emptied[0]} batch" if emptied else "a batch of another rank"
            raise DataError(
                f"step {self.global_step}: every image of {where} was unreadable and skipped "
                "(data.skip_invalid=true; the warnings above name the files): replace or "
                "remove those files"
            )

    def stop_if_not_finite(self, loss: Tensor, terms: dict[str, Any]) -> None:
        """NonFiniteLossError on every rank when the loss is NaN/inf on any rank, before the
        optimiser step (so the weights are still those of the last good step)."""
        not_finite = not bool(torch.isfinite(loss))
        if self.trainer.strategy.reduce_boolean_decision(not_finite, all=False):
            values = {name: float(torch.as_tensor(value).detach()) for name, value in terms.items()}
            raise NonFiniteLossError(self.global_step, values)

    def unsupervised_step(
        self, unlabeled: dict[str, Any]
    ) -> tuple[dict[str, Tensor], PseudoLabelBatch, list[dict[str, Tensor]]]:
        """Pseudo-label the weak views, move the labels to the strong views, student loss.

        Returns the loss terms, the step's pseudo labels (both frames, with the ground truth of
        the unlabeled images for statistics) and the teacher's detections on the weak views.
        """
        teacher_out = teacher_forward(self.teacher, unlabeled["weak"])
        pseudo_weak = split_batch_by_thresholds(
            teacher_out.detections, self.reliable_thresholds, self.uncertain_thresholds
        )
        if self.criterion.config.uncertain == "iou":  # Fig. 6c: uncertain boxes become reliable
            pseudo_weak = [merge_uncertain_into_reliable(p) for p in pseudo_weak]
        to_strong = weak_to_strong(  # [B, 3, 3]
            torch.stack(list(unlabeled["weak_matrix"])),
            torch.stack(list(unlabeled["strong_matrix"])),
        )
        to_weak = torch.linalg.inv_ex(to_strong).inverse  # no error check: no wait for a GPU
        strong_sizes = [tuple(image.shape[-2:]) for image in unlabeled["strong"]]
        pseudo_strong = map_pseudo_labels(pseudo_weak, to_strong, strong_sizes)
        # Derive the weak-frame labels back from the strong ones, so both lists hold exactly the
        # same boxes in the same order even if a mapped box was dropped at the border.
        weak_sizes = [tuple(image.shape[-2:]) for image in unlabeled["weak"]]
        pseudo_weak = map_pseudo_labels(pseudo_strong, to_weak, weak_sizes)
        # The criterion indexes the weak boxes with the strong boxes' indices (RPLM). A box the
        # way back dropped (no area left after clipping: not seen with flips and scales, whose
        # boxes keep their area) would shift them silently; the counts are known on the host.
        for image, (strong, weak) in enumerate(zip(pseudo_strong, pseudo_weak)):
            if (len(strong.reliable_boxes), len(strong.uncertain_boxes)) != (
                len(weak.reliable_boxes),
                len(weak.uncertain_boxes),
            ):
                raise RuntimeError(
                    f"unlabeled image {image} of the batch: a pseudo label of the strong view "
                    "has no area in the weak view, so the two views' labels no longer match"
                )
        losses, stats = self.criterion(
            self.student,
            self.teacher,
            unlabeled["strong"],
            pseudo_strong,
            pseudo_weak,
            to_weak,
            teacher_out,
        )
        pseudo_batch = PseudoLabelBatch(
            strong_images=[image.detach() for image in unlabeled["strong"]],
            pseudo_strong=pseudo_strong,
            pseudo_weak=pseudo_weak,
            gt_weak_boxes=[t["weak_boxes"] for t in unlabeled["targets"]],
            gt_weak_labels=[t["labels"] for t in unlabeled["targets"]],
            num_mined=round(stats["mined_per_image"] * len(pseudo_strong)),
            threshold_refreshes=int(self.threshold_refreshes),
            threshold_prior=self.threshold_prior,
        )
        return losses, pseudo_batch, teacher_out.detections

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = build_sgd(self.student.parameters(), **self.hparams.optim)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ----------------------------------------------------------------------------- evaluation
    def evaluated_models(self) -> Iterable[tuple[str, FasterRCNN]]:
        yield "student", self.student
        # A validation at the switch step itself (after the last burn-in step) sees a teacher
        # that is only the student's copy: it is not scored until it has been trained.
        at_switch = (
            self._trainer is not None
            and self.trainer.state.fn == TrainerFn.FITTING
            and self.global_step == self.burn_in_steps
        )
        if self.teacher is not None and bool(self.teacher_ready) and not at_switch:
            yield "teacher", self.teacher

    def on_validation_epoch_start(self) -> None:
        self._predictions = {name: [] for name, _ in self.evaluated_models()}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        for name, model in self.evaluated_models():
            self._predictions[name].extend(predict_original_frame(model, batch))

    def on_validation_epoch_end(self) -> None:
        for name, predictions in self._predictions.items():
            predictions = gather_predictions(predictions)
            metrics = self.score(predictions, write_to=self.eval_dir / f"{name}.json")
            self.eval_metrics[name] = metrics
            scalars = {f"{name}/{k}": v for k, v in metrics.items() if k != "per_class"}
            # Per-class AP (the paper's Tab. 4 reads it on head and tail classes).
            per_class = metrics["per_class"].items()
            scalars.update({f"{name}/ap/{c}": ap for c, ap in per_class if ap is not None})
            self.log_dict(scalars, rank_zero_only=True)
        self.last_eval_step = self.global_step
        self._predictions = {}

    @property
    def eval_dir(self) -> Path:
        return Path(self.trainer.default_root_dir) / "eval"

    def score(self, predictions: list[dict[str, Tensor]], write_to: Path | None = None) -> dict:
        """COCO metrics of predictions (original frame) against `val_json`, on the images
        predicted (one prediction each, boxes or none): a val image the loader skipped
        (`data.skip_invalid`) is left out of the score and counted, not scored as all missed."""
        results = to_coco_results(predictions, self.hparams.category_ids)
        if write_to is not None and self.trainer.is_global_zero:
            write_results(write_to, results)
        predicted = [prediction["image_id"] for prediction in predictions]
        return evaluate_coco(self.hparams.val_json, results, self.hparams.class_names, predicted)

    @torch.no_grad()
    def evaluate_loader(self, model: FasterRCNN, loader: Iterable[dict[str, Any]]) -> dict:
        """Score `model` on a whole loader outside Lightning's loop (used at the burn-in switch)."""
        was_training = model.training
        model.eval()
        predictions = []
        with precision_context(self):  # as Lightning's validation loop runs
            for batch in progress(loader, "evaluation"):
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                predictions.extend(predict_original_frame(model, batch))
        model.train(was_training)
        return self.score(gather_predictions(predictions))


def fill_threshold_counts(module: LabelMatchModule, state_dict: dict, prefix: str, *_) -> None:
    """A checkpoint written before `threshold_version` or `threshold_refreshes` existed still
    loads (a resumed run, or `labelmatch.checkpoints.load_module`): without a version its
    thresholds count as version 0; without a refresh count, offline ACT refreshed once per
    version (fixed thresholds: version 0), online ACT once before its queue updates."""
    version = int(state_dict.setdefault(f"{prefix}threshold_version", torch.tensor(0)))
    online = module.method.get("act", {}).get("mode") == "online"
    refreshes = min(version, 1) if online else version
    state_dict.setdefault(f"{prefix}threshold_refreshes", torch.tensor(refreshes))


def precision_context(module: L.LightningModule) -> AbstractContextManager:
    """The trainer's precision for a forward pass outside Lightning's loops (autocast under
    `trainer.precision=bf16-mixed` / `16-mixed`); nothing without a trainer."""
    trainer = module._trainer
    return trainer.precision_plugin.forward_context() if trainer else contextlib.nullcontext()


def detector_targets(targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
    """The two keys torchvision's detectors read from each target."""
    return [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


@torch.no_grad()
def predict_original_frame(model: FasterRCNN, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
    """Detections of an eval-mode model, mapped from the view back to the original image; none
    for a batch whose every image was unreadable (`collate_labeled` drops them; torchvision
    cannot batch zero images)."""
    if not batch["images"]:
        return []
    outputs = model(batch["images"])
    predictions = []
    for output, target in zip(outputs, batch["targets"]):
        to_original = torch.linalg.inv(target["matrix"].to(output["boxes"]))
        predictions.append(
            {
                "image_id": int(target["image_id"]),
                "boxes": map_boxes(output["boxes"], to_original).cpu(),
                "scores": output["scores"].cpu(),
                "labels": output["labels"].cpu(),
            }
        )
    return predictions


def detector_state(state_dict: dict[str, Tensor], model: str) -> dict[str, Tensor]:
    """The weights of one detector ("student" or "teacher") from this module's state dict."""
    prefix = f"{model}."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_student_weights(student: FasterRCNN, checkpoint_path: str) -> None:
    """Start from a supervised model (the official two-stage recipe): a Lightning checkpoint of
    this project (its `student.*` weights) or a plain detector state dict."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"method.init_from: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    if any(key.startswith("student.") for key in state):
        state = detector_state(state, "student")
    own = student.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in own.keys() & state.keys()
        if state[key].shape != own[key].shape
    )
    problems = []  # another detector (model=...) than this run's
    if missing:
        problems.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} not in this model, e.g. {unexpected[0]}")
    if shapes:
        problems.append(f"{len(shapes)} of other shapes (checkpoint vs model), e.g. {shapes[0]}")
    if problems:
        examples = "; ".join(problems)
        raise ConfigError(
            f"method.init_from: {path} holds another detector than this run's model ({examples});"
            " give the checkpoint of a run with the same model=... and model.* options"
        )
    student.load_state_dict(state)
    log.info("student initialised from %s", path)
