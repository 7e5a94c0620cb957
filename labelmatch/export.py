"""Export a trained detector for deployment:

    python -m labelmatch.export checkpoint=CKPT format=state_dict|torchscript|onnx
                                [model=teacher|student] [out=PATH]

* `state_dict`: the torchvision `FasterRCNN`'s plain state dict (`torch.save`), which loads into
  the detector that `labelmatch.models.faster_rcnn` builds (README, "Deploying the teacher").
* `torchscript`: `torch.jit.script` of the detector in eval mode. Scripting, not tracing:
  torchvision's Faster R-CNN is written to be scripted, and a trace would freeze the
  data-dependent control flow (number of proposals and detections) to the example image.
* `onnx`: `torch.onnx.export` with the TorchScript-based exporter (`dynamo=False`), as
  torchvision's own tests export its detection models (opset >= 11); the dynamo exporter would
  add onnxscript as a dependency. One image per call, any height and width.

Every model takes one float32 RGB image [3, H, W] in [0, 1], already resized as evaluation
resizes it (short side `test_scale`, long side <= `max_size`; the model itself never resizes),
and returns boxes [N, 4] (x1, y1, x2, y2 in that image's pixels), labels [N] (1..C) and scores
[N]. `OUT.json` beside the file records that, the class names and dataset category ids, the
sizes, and the verification: the written file is loaded back (into a freshly built detector,
by `torch.jit.load`, or by onnxruntime) and run on a few val images against the PyTorch
detector; every detection must find one of the same label with its box within `box_atol`
pixels and its score within `score_atol` (but one kept by only one side with a score within
`score_atol` of the other side's cut: a rounding tie), else the command fails.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor
from torchvision.models.detection import FasterRCNN

from labelmatch.checkpoints import (
    build_detector,
    load_module,
    pick_detector,
    training_config,
    training_reading,
)
from labelmatch.cli import cli_errors
from labelmatch.data.errors import DataError
from labelmatch.data.images import DECODE_ERRORS
from labelmatch.data.transforms import TestTransform
from labelmatch.instantiate import instantiate_datamodule
from labelmatch.models.roi_align import OneLevelShortcutRoIAlign
from labelmatch.predict import image_files, image_view, reads_exif_orientation, test_transform

log = logging.getLogger("labelmatch")

SUFFIXES = {"state_dict": ".pth", "torchscript": ".pt", "onnx": ".onnx"}
RELOADED_BY = {
    "state_dict": "the reloaded state dict",
    "torchscript": "torch.jit.load",
    "onnx": "onnxruntime",
}
OUTPUTS = ("boxes", "labels", "scores")
Detections = dict[str, Tensor]


class ExportMismatchError(RuntimeError):
    """The exported model's detections differ from PyTorch's beyond the tolerances."""


# ---------------------------------------------------------------------------------- the model
def standalone_detector(detector: FasterRCNN) -> FasterRCNN:
    """An eval-mode copy whose RoIAlign always takes its per-level path: the one-level shortcut
    gives the same outputs (tests/test_models.py), but the ONNX tracer would freeze its
    data-dependent branch to the one the example image takes. The pooler keeps its `aligned`
    setting (torchvision's own `MultiScaleRoIAlign` cannot align, docs/method.md §7)."""
    detector = copy.deepcopy(detector).eval()
    pool = detector.roi_heads.box_roi_pool
    if isinstance(pool, OneLevelShortcutRoIAlign):
        pool.shortcut = False
    return detector


def write_model(detector: FasterRCNN, fmt: str, out: Path, example: Tensor, opset: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "state_dict":
        torch.save(detector.state_dict(), out)
    elif fmt == "torchscript":
        torch.jit.script(detector).save(str(out))
    else:
        torch.onnx.export(
            detector,
            ([example],),  # FasterRCNN.forward takes a list of images
            str(out),
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                **{name: {0: "detections"} for name in OUTPUTS},
            },
            opset_version=opset,
            dynamo=False,
        )


def reloaded_model(fmt: str, out: Path, model_config: dict, num_classes: int) -> Callable:
    """The written file loaded back as a function: image [3, H, W] -> detections."""
    if fmt == "state_dict":
        detector = build_detector(model_config, num_classes)
        detector.load_state_dict(torch.load(out, weights_only=True))
        return lambda image: detector.eval()([image])[0]
    if fmt == "torchscript":
        scripted = torch.jit.load(str(out))
        return lambda image: scripted([image])[1][0]  # scripted: (losses, detections)
    import onnxruntime  # the optional `export` extra

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run_onnx(image: Tensor) -> Detections:
        arrays = session.run(list(OUTPUTS), {"image": image.numpy()})
        return {name: torch.from_numpy(array) for name, array in zip(OUTPUTS, arrays)}

    return run_onnx


# --------------------------------------------------------------------------- the verification
@dataclass
class Agreement:
    """How far an exported model's detections are from PyTorch's on the same images."""

    images: int
    detections: int  # PyTorch's
    exported_detections: int
    matched: int
    # Kept by one model only, scored within score_atol of the other's cut: a tie at the cut.
    at_the_cut: int
    max_box_error: float  # pixels, over matched detections
    max_score_error: float
    box_atol: float
    score_atol: float

    @property
    def passed(self) -> bool:
        """Every detection of either side matched or excused, and at least one compared: two
        models that detect nothing on the verification images agree on nothing."""
        everything = self.detections + self.exported_detections
        return everything > 0 and 2 * self.matched + self.at_the_cut == everything

    def line(self, against: str) -> str:
        verdict = "passed" if self.passed else "FAILED"
        if self.detections + self.exported_detections == 0:
            return (
                f"verification {verdict} ({against} vs PyTorch, {self.images} images): neither "
                "model detects anything on them, so nothing was compared; pass images=<a folder "
                "with objects>"
            )
        return (
            f"verification {verdict} ({against} vs PyTorch, {self.images} images): "
            f"{self.matched} of {self.detections} PyTorch detections matched, same label "
            f"({self.exported_detections} exported, {self.at_the_cut} only on one side at the "
            f"score cut); max box error {self.max_box_error:.2g} px "
            f"(atol {self.box_atol:g}), max score error {self.max_score_error:.2g} "
            f"(atol {self.score_atol:g})"
        )


def match_detections(
    reference: Detections, exported: Detections, box_atol: float, score_atol: float
) -> tuple[list[int], list[int], float, float]:
    """(indices of the reference detections left unmatched, of the exported ones left
    unmatched, max box error and max score error over the matches).

    Reference detections, highest score first, each take the unused exported detection of the
    same label whose box is closest (largest coordinate difference); it is a match when that box
    is within `box_atol` pixels and its score within `score_atol`."""
    matched, used = set(), set()
    max_box, max_score = 0.0, 0.0
    for i in reference["scores"].argsort(descending=True).tolist():
        box_errors = (exported["boxes"] - reference["boxes"][i]).abs().amax(dim=1)
        same_label = exported["labels"] == reference["labels"][i]
        candidates = [j for j in range(len(box_errors)) if same_label[j] and j not in used]
        if not candidates:
            continue
        j = min(candidates, key=lambda j: float(box_errors[j]))
        score_error = abs(float(exported["scores"][j] - reference["scores"][i]))
        if float(box_errors[j]) <= box_atol and score_error <= score_atol:
            matched.add(i)
            used.add(j)
            max_box, max_score = max(max_box, float(box_errors[j])), max(max_score, score_error)
    only_reference = [i for i in range(len(reference["scores"])) if i not in matched]
    only_exported = [j for j in range(len(exported["scores"])) if j not in used]
    return only_reference, only_exported, max_box, max_score


def score_cut(detections: Detections, score_thresh: float, max_detections: int) -> float:
    """The lowest score a model could have kept on this image: its score threshold, or its
    lowest kept score when it kept as many detections as it may."""
    scores = detections["scores"]
    return float(scores.min()) if len(scores) >= max_detections else score_thresh


def count_at_the_cut(
    unmatched: list[int], detections: Detections, other_cut: float, score_atol: float
) -> int:
    """Unmatched detections that the other model may have dropped by a rounding difference:
    their score is within `score_atol` of the other model's cut."""
    return sum(float(detections["scores"][i]) <= other_cut + score_atol for i in unmatched)


@torch.no_grad()
def verify(
    detector: FasterRCNN,
    exported: Callable,
    images: list[Tensor],
    box_atol: float,
    score_atol: float,
) -> Agreement:
    """Run every image through the PyTorch detector and the exported model; compare."""
    agreement = Agreement(len(images), 0, 0, 0, 0, 0.0, 0.0, box_atol, score_atol)
    limits = detector.roi_heads.score_thresh, detector.roi_heads.detections_per_img
    for image in images:
        reference, candidate = detector([image])[0], exported(image)
        only_reference, only_exported, box_error, score_error = match_detections(
            reference, candidate, box_atol, score_atol
        )
        agreement.detections += len(reference["scores"])
        agreement.exported_detections += len(candidate["scores"])
        agreement.matched += len(reference["scores"]) - len(only_reference)
        agreement.at_the_cut += count_at_the_cut(
            only_reference, reference, score_cut(candidate, *limits), score_atol
        ) + count_at_the_cut(only_exported, candidate, score_cut(reference, *limits), score_atol)
        agreement.max_box_error = max(agreement.max_box_error, box_error)
        agreement.max_score_error = max(agreement.max_score_error, score_error)
    return agreement


def verification_images(
    cfg: DictConfig, transform: TestTransform, exif_orientation: bool
) -> list[Tensor]:
    """`num_images` evaluation views: of the images in `images=DIR` (read with `transform` and
    `exif_orientation`, the training run's unless given), else of the training run's val
    split."""
    if cfg.num_images < 1:  # the export traces its first image; verifying none proves nothing
        raise DataError(f"num_images must be at least 1, got {cfg.num_images}")
    if cfg.images:
        views = []
        for i, path in enumerate(image_files(Path(cfg.images))[: cfg.num_images], 1):
            try:  # the header was readable (image_files); the data past it may not be
                views.append(image_view(path, transform, i, exif_orientation)[1])
            except DECODE_ERRORS as error:
                message = f"images={cfg.images}: {path.name} cannot be decoded ({error})"
                raise DataError(message) from error
        return views
    trained = training_config(cfg.checkpoint)
    if trained is None:
        raise DataError(
            f"checkpoint={cfg.checkpoint}: its run directory has no .hydra/config.yaml to take "
            "val images from; pass images=<a folder of images> to verify the export on"
        )
    datamodule = instantiate_datamodule(trained.data, use_unlabeled=False)
    datamodule.prepare_data()
    datamodule.setup("validate")
    views: list[Tensor] = []
    for batch in datamodule.val_dataloader():
        views.extend(batch["images"])
        if len(views) >= cfg.num_images:
            break
    return views[: cfg.num_images]


# ---------------------------------------------------------------------------------- the command
def default_out(checkpoint: Path, model: str, fmt: str) -> Path:
    """`<run>/checkpoints/best.ckpt` -> `<run>/checkpoints/best-teacher.onnx` (or .pt, .pth)."""
    return checkpoint.with_name(f"{checkpoint.stem}-{model}{SUFFIXES[fmt]}")


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the model and `OUT.json`; returns what `OUT.json` holds."""
    if cfg.format not in SUFFIXES:
        raise DataError(f"format must be one of {sorted(SUFFIXES)}, got {cfg.format!r}")
    module, checkpoint = load_module(cfg.checkpoint)
    picked = pick_detector(module, cfg.model)
    model = "student" if picked is module.student else "teacher"
    detector = standalone_detector(picked)
    trained = training_reading(checkpoint, training_config(cfg.checkpoint))
    transform = test_transform(cfg, trained)
    out = Path(cfg.out) if cfg.out else default_out(Path(cfg.checkpoint), model, cfg.format)
    images = verification_images(cfg, transform, reads_exif_orientation(cfg, trained))
    write_model(detector, cfg.format, out, images[0], cfg.opset)
    hparams = module.hparams
    exported = reloaded_model(cfg.format, out, dict(hparams.model_config), len(hparams.class_names))
    agreement = verify(detector, exported, images, cfg.box_atol, cfg.score_atol)
    against = RELOADED_BY[cfg.format]
    description = {
        "format": cfg.format,
        "file": out.name,
        "model": model,
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "step": checkpoint["global_step"],
        "class_names": list(hparams.class_names),
        "category_ids": list(hparams.category_ids),
        "model_config": dict(hparams.model_config),
        "input": "one float32 RGB image [3, H, W] in [0, 1], resized as in evaluation: short side "
        "test_scale, long side <= max_size (the model itself never resizes)",
        "test_scale": transform.scale,
        "max_size": transform.max_size,
        "output": "boxes [N, 4] (x1, y1, x2, y2 in the input image's pixels), labels [N] "
        "(1..C; dataset category id = category_ids[label - 1]), scores [N]",
        "verification": {**asdict(agreement), "against": against, "passed": agreement.passed},
    }
    Path(f"{out}.json").write_text(json.dumps(description, indent=2))
    log.info("wrote %s (%s of the %s) and %s.json", out, cfg.format, model, out)
    print(agreement.line(against))
    if not agreement.passed:
        raise ExportMismatchError(
            f"{out}: {agreement.line(against)}; the file is kept for inspection"
        )
    return description


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with cli_errors(log, ExportMismatchError):
        export(cfg)


if __name__ == "__main__":
    main()
