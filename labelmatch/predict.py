"""Detect objects in a folder of images with a trained checkpoint:

    python -m labelmatch.predict checkpoint=CKPT images=DIR out=DIR [model=teacher|student]
                                 [score=0.5] [device=auto|cpu|cuda|cuda:N] [batch_size=4]
                                 [exif_orientation=true|false]

Each image is resized exactly as in evaluation (`TestTransform`; short side `test_scale`, long
side <= `max_size`, both taken from the training run's config when not given), detected by the
teacher (default; the student for a checkpoint without a trained teacher) and written to `out`
as `<name>.png` with its boxes of score >= `score` drawn. Every detection the model outputs
(score >= 0.001, the official test-time floor, docs/method.md §1) goes to `out/detections.json`
(COCO results: image_id, category_id of the dataset, bbox xywh, score), as `labelmatch.evaluate`
writes them; its image ids are 1..N in file-name order, and `out/images.json` gives each id's
file name and size (map them to a val json's ids to score the file against it). The model runs
on `device` (auto: the first GPU when there is one), up to `batch_size` images at a time, only
images whose views have one size together (`same_size_batches`); decoding, drawing and the files
stay on the CPU. Images are read turned as their EXIF orientation tells viewers, as in training
(`exif_orientation`, default: the training run's `data.exif_orientation`), so the boxes, the
drawings and images.json's sizes are in the frame a viewer shows.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision import tv_tensors
from torchvision.io import write_png
from torchvision.transforms.v2.functional import to_dtype
from torchvision.utils import draw_bounding_boxes

from labelmatch.checkpoints import load_module, pick_detector, training_config, training_reading
from labelmatch.cli import cli_errors
from labelmatch.data.errors import DataError
from labelmatch.data.images import DECODABLE_FORMATS, DECODE_ERRORS, decode_rgb, read_header
from labelmatch.data.split_files.image_folder import image_size
from labelmatch.data.transforms import TestTransform, resized_size
from labelmatch.errors import ConfigError
from labelmatch.evaluation.coco_eval import to_coco_results, write_results
from labelmatch.method.module import predict_original_frame
from labelmatch.progress import progress

log = logging.getLogger("labelmatch")


# conf/predict.yaml's hydra.run.dir: out= when given, else a log folder. `oc.select` falls back
# on a missing key but not on out=null, on which Hydra failed before predict could say more.
def _given_or(key: str, default: Any, *, _root_: DictConfig) -> Any:
    """The config's `key` when set (neither missing nor null), else `default`."""
    value = OmegaConf.select(_root_, key, default=None)
    return default if value is None else value


OmegaConf.register_new_resolver("given_or", _given_or, replace=True)


def image_files(folder: Path) -> list[Path]:
    """The images directly in `folder`, by name: the files whose header the training loaders
    can decode (`image_size`, the rule `labelmatch.prepare folder` applies too); the others
    (text files, unsupported formats, broken headers) are counted and named in a warning."""
    if not folder.is_dir():
        raise FileNotFoundError(f"images={folder}: no such folder")
    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.is_file()]
    folders = sum(p.is_dir() for p in entries)
    not_searched = (
        f"; predict reads the images directly in the folder, not in its {folders} sub-folders"
        if folders
        else ""
    )
    decodable = {p: image_size(p) is not None for p in files}
    readable = [p for p in files if decodable[p]]
    skipped = [p.name for p in files if not decodable[p]]
    if not readable:
        raise FileNotFoundError(
            f"images={folder}: none of its {len(files)} files is an image the loaders can decode "
            f"({', '.join(DECODABLE_FORMATS)}){not_searched}"
        )
    if skipped:
        log.warning(
            "images=%s: %d of %d files skipped, not a decodable %s image: %s",
            folder, len(skipped), len(files), "/".join(DECODABLE_FORMATS), ", ".join(skipped[:10])
            + (", ..." if len(skipped) > 10 else ""),
        )  # fmt: skip
    stems = [p.stem for p in readable]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        named = "; ".join(
            f"{', '.join(p.name for p in readable if p.stem == stem)} (out/{stem}.png)"
            for stem in clashes
        )
        raise DataError(f"images={folder}: files that would write the same drawing: {named}")
    return readable


def inference_device(name: str) -> torch.device:
    """`device=`: auto (the first CUDA device when one is visible, else the CPU), cpu, cuda or
    cuda:N; a device this machine does not have is a DataError, not a failure mid-folder."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise DataError(f"device={name}: not a device name (auto, cpu, cuda, cuda:N)") from error
    if device.type not in ("cpu", "cuda"):
        raise DataError(f"device={name}: predict runs on cpu or cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataError(f"device={name}: no CUDA device is visible here (use cpu or auto)")
        if (device.index or 0) >= count:
            raise DataError(f"device={name}: this machine has {count} CUDA device(s)")
    return device


def same_size_batches(
    files: list[Path], transform: TestTransform, batch_size: int, exif_orientation: bool = True
) -> list[list[tuple[int, Path]]]:
    """(image id, file) batches of at most `batch_size` images whose evaluation views have one
    size; ids are 1..N in file-name order, and each size's images keep that order.

    torchvision pads a batch to its largest view, and the anchors over the padding change the
    RPN's proposals of a smaller image, so its detections too (measured on the smoke model: a
    box moved by 122 px). Batched by view size, each image gets the detections it gets alone,
    up to float rounding. `exif_orientation`: the images are read turned as their EXIF tag says
    (`image_view`), so their sizes are too."""
    by_view: dict[tuple[int, int], list[tuple[int, Path]]] = defaultdict(list)
    for image_id, path in enumerate(files, 1):
        width, height = image_size(path, exif_orientation)  # readable: image_files kept it
        by_view[resized_size(height, width, transform.scale, transform.max_size)].append(
            (image_id, path)
        )
    return [
        group[start : start + batch_size]
        for group in by_view.values()
        for start in range(0, len(group), batch_size)
    ]


def test_transform(cfg: DictConfig, trained: dict[str, Any]) -> TestTransform:
    """The evaluation resize of the training run (`trained`:
    `labelmatch.checkpoints.training_reading`), unless `test_scale`/`max_size` are given."""
    sizes = {key: cfg[key] if cfg[key] is not None else trained.get(key) for key in
             ("test_scale", "max_size")}  # fmt: skip
    missing = [key for key, value in sizes.items() if value is None]
    if missing:
        run_config = (  # which of the two sources said nothing
            "its run's .hydra/config.yaml gives none (a size left to be derived)"
            if training_config(cfg.checkpoint) is not None
            else "its run directory has no .hydra/config.yaml"
        )
        raise DataError(
            f"{', '.join(f'{key}=?' for key in missing)}: the checkpoint holds no evaluation "
            f"size (it was written before 2026-12-05) and {run_config}; pass "
            f"{' '.join(f'{key}=<pixels>' for key in missing)} as in training"
        )
    return TestTransform(sizes["test_scale"], sizes["max_size"])


def reads_exif_orientation(cfg: DictConfig, trained: dict[str, Any]) -> bool:
    """`exif_orientation`, else the training run's (`trained`:
    `labelmatch.checkpoints.training_reading`), else true (the default; runs from before the
    option read no orientation, which only images with a tag tell apart)."""
    if cfg.get("exif_orientation") is not None:
        return bool(cfg.exif_orientation)
    return bool(trained.get("exif_orientation", True))


def image_view(
    path: Path, transform: TestTransform, image_id: int, exif_orientation: bool = True
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(the decoded RGB image, uint8 [3, H, W], turned as its EXIF orientation tells viewers
    when `exif_orientation` (`labelmatch.data.images`); its evaluation view, float [3, h, w] in
    [0, 1]; the view's target: no boxes, the view matrix that maps detections back to the
    image)."""
    orientation = read_header(path).orientation if exif_orientation else 1
    image = decode_rgb(path, orientation)
    no_boxes = tv_tensors.BoundingBoxes(
        torch.zeros(0, 4), format="XYXY", canvas_size=tuple(image.shape[-2:])
    )
    # The view from the decoded pixels, as evaluation makes it (a 16-bit PNG's too).
    view, target = transform(
        image, {"boxes": no_boxes, "labels": torch.zeros(0), "image_id": image_id}
    )
    if image.dtype != torch.uint8:  # a 16-bit PNG: the same picture in 8 bits, drawable
        image = to_dtype(image, torch.uint8, scale=True)
    return image, view, target


@torch.no_grad()
def predict(cfg: DictConfig) -> list[dict]:
    # First: a missing out= is reported before a model is loaded.
    if cfg.out is None:
        raise ConfigError("out=null: predict writes its images and detections to out=DIR")
    out = Path(cfg.out)
    if out.resolve() == Path(cfg.images).resolve():  # each drawing is out/<stem>.png
        raise ConfigError(
            f"out={cfg.out} is the images= folder: its drawings would overwrite PNG images "
            "there and be read as images by the next run; give another folder"
        )
    device = inference_device(cfg.device)
    if cfg.batch_size < 1:
        raise DataError(f"batch_size={cfg.batch_size}: predict needs at least one image a batch")
    module, checkpoint = load_module(cfg.checkpoint)
    detector = pick_detector(module, cfg.model).to(device)
    trained = training_reading(checkpoint, training_config(cfg.checkpoint))
    transform = test_transform(cfg, trained)
    exif_orientation = reads_exif_orientation(cfg, trained)
    names, category_ids = module.hparams.class_names, module.hparams.category_ids
    out.mkdir(parents=True, exist_ok=True)
    predictions, images, drawn, unreadable = [], [], 0, []
    batches = same_size_batches(
        image_files(Path(cfg.images)), transform, cfg.batch_size, exif_orientation
    )
    for batch_files in progress(batches, "predict"):
        decoded = []
        for image_id, path in batch_files:
            try:  # the header was readable (image_files); the data past it may not be
                decoded.append((path, *image_view(path, transform, image_id, exif_orientation)))
            except DECODE_ERRORS as error:
                log.warning("%s: cannot decode the image (%s), skipped", path, error)
                unreadable.append(path.name)
        if not decoded:
            continue
        batch = {
            "images": [view.to(device) for _, _, view, _ in decoded],
            "targets": [target for _, _, _, target in decoded],
        }
        # The json keeps every detection (a display threshold would only lower its AP); the
        # picture shows those of score >= `score`.
        for (path, image, _, _), prediction in zip(
            decoded,
            predict_original_frame(detector, batch),  # on the CPU again
        ):
            predictions.append(prediction)
            drawn += draw(image, prediction, cfg.score, names, out / f"{path.stem}.png")
            height, width = image.shape[-2:]
            record = {"id": prediction["image_id"], "file_name": path.name}
            images.append({**record, "height": height, "width": width})
    predictions.sort(key=lambda prediction: prediction["image_id"])  # file-name order again
    images.sort(key=lambda record: record["id"])
    write_results(out / "detections.json", to_coco_results(predictions, category_ids))
    (out / "images.json").write_text(json.dumps(images, indent=2))
    if unreadable:
        log.warning("%d images could not be decoded and have no detections: %s",
                    len(unreadable), ", ".join(unreadable))  # fmt: skip
    boxes = sum(len(p["boxes"]) for p in predictions)
    log.info(
        "%d images, %d detections in detections.json, %d boxes with score >= %.2f drawn -> %s",
        len(images), boxes, drawn, cfg.score, out,
    )  # fmt: skip
    return predictions


def draw(image: torch.Tensor, prediction: dict, score: float, names: list[str], path: Path) -> int:
    """Write `image` (uint8 [3, H, W]) with the boxes of score >= `score` to `path` as PNG;
    returns how many were drawn."""
    shown = prediction["scores"] >= score
    captions = [
        f"{names[label - 1]} {value:.2f}"
        for label, value in zip(
            prediction["labels"][shown].tolist(), prediction["scores"][shown].tolist()
        )
    ]
    if captions:  # draw_bounding_boxes warns on an empty box list
        image = draw_bounding_boxes(image, prediction["boxes"][shown], captions, colors="lime")
    write_png(image, str(path))
    return len(captions)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with cli_errors(log):
        predict(cfg)


if __name__ == "__main__":
    main()
