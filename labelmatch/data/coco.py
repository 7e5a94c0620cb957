"""COCO-format detection datasets: loading, validation before training, and reading samples.

Every dataset, the embedded digits one or a user's, resolves to a `CocoSplits`: one image
folder and the labeled / unlabeled / validation annotation files (docs/method.md §6).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from labelmatch.data.categories import CategoryMap
from labelmatch.data.errors import DataError, UnknownCategoryError
from labelmatch.data.images import (
    DECODE_ERRORS,
    HEADER_ERRORS,
    ImageHeader,
    decode_rgb,
    read_header,
)

logger = logging.getLogger(__name__)


def load_coco_json(path: str | os.PathLike, require_categories: bool = True) -> dict:
    """Read a COCO annotation file and check its top-level structure.

    `require_categories=False` is for unlabeled files, which may come without categories
    (COCO's image_info_unlabeled2017.json).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file does not exist")
    try:
        with path.open("rb") as file:
            coco = json.load(file)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno} "
            f"(char {error.pos}): {error.msg}"
        ) from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from error
    if not isinstance(coco, dict):
        raise DataError(f"{path}: top level must be a JSON object, got {type(coco).__name__}")
    required = ["images", "categories"] if require_categories else ["images"]
    for key in required:
        if key not in coco:
            raise DataError(f"{path}: missing required key '{key}'")
    for key in ("images", "annotations", "categories"):
        if key in coco and not isinstance(coco[key], list):
            raise DataError(f"{path}: '{key}' must be a list, got {type(coco[key]).__name__}")
    first_entry: dict[int, int] = {}  # category id -> its entry's position
    for position, category in enumerate(coco.get("categories", [])):
        # Integer ids: the map orders categories by id and looks annotations up by it (1.2 and
        # 1.7 would both be category 1, "10" would sort before "9").
        if not (
            isinstance(category, dict)
            and is_integer(category.get("id"))
            and isinstance(category.get("name"), str)
        ):
            raise DataError(
                f"{path}: category entry {position} needs an integer 'id' and a string 'name', "
                f"got {category!r}"
            )
        if category["id"] in first_entry:
            raise DataError(
                f"{path}: category id {category['id']} appears twice (entries "
                f"{first_entry[category['id']]} and {position})"
            )
        first_entry[category["id"]] = position
    return coco


@dataclass
class CocoSplits:
    """The four paths every dataset resolves to. `unlabeled_json` is None for supervised runs.

    File names are relative to `image_dir`, or to `unlabeled_image_dir` / `val_image_dir` when
    those splits keep their images elsewhere (COCO's train2017/, unlabeled2017/, val2017/).

    `calibration_json` (optional, images under `calibration_image_dir`, default `image_dir`):
    labeled images drawn like the labeled split that no training step reads. The estimated
    prior calibrates the teacher on them instead of on the labeled images it trains on
    (`DetectionDataModule.calibration_dataloader`, docs/method.md §2 "Estimated prior").
    """

    image_dir: Path
    labeled_json: Path
    unlabeled_json: Path | None
    val_json: Path
    unlabeled_image_dir: Path | None = None
    val_image_dir: Path | None = None
    calibration_json: Path | None = None
    calibration_image_dir: Path | None = None

    def __post_init__(self) -> None:
        self.image_dir = Path(self.image_dir)
        self.labeled_json = Path(self.labeled_json)
        self.val_json = Path(self.val_json)
        if self.unlabeled_json is not None:
            self.unlabeled_json = Path(self.unlabeled_json)
        if self.calibration_json is not None:
            self.calibration_json = Path(self.calibration_json)
        self.unlabeled_image_dir = Path(self.unlabeled_image_dir or self.image_dir)
        self.val_image_dir = Path(self.val_image_dir or self.image_dir)
        self.calibration_image_dir = Path(self.calibration_image_dir or self.image_dir)

    def resolve(self) -> CocoSplits:
        """Already resolved; present so that data modules can call `resolve()` on any splits."""
        return self


def is_integer(value: Any) -> bool:
    """A JSON integer: 7, not true (Python's bool is an int, so `true` would stand for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_coco_box(bbox: Any) -> bool:
    """COCO's [x, y, w, h]: 4 finite numbers (what the loaders and pycocotools' IoU read)."""
    return (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)
    )


def is_training_box(annotation: dict) -> bool:
    """Whether training learns from the annotation: `iscrowd=1` and `ignore=1` (MMDetection's
    CocoDataset skips such boxes; some converted datasets mark regions so) are no target."""
    return not annotation.get("iscrowd", 0) and not annotation.get("ignore", 0)


def is_positive_integer(value: Any) -> bool:
    """JSON numbers such as 640 or 640.0 (but not True, "640" or 640.5)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and float(value).is_integer()
    )


def _size_problem(
    header: ImageHeader, height: int, width: int, exif_orientation: bool
) -> str | None:
    """What is wrong with an image's record judged by its file's header (cheap: no decoding),
    or None; damage past the header is found when the image is decoded. A record with the size
    of the other frame than `data.exif_orientation` reads is told so."""
    actual_width, actual_height = header.size(exif_orientation)
    if (actual_width, actual_height) == (width, height):
        return None
    problem = (
        f"image is {actual_width}x{actual_height} (w x h) but its record says {width}x{height}"
    )
    if header.orientation >= 5 and header.size(not exif_orientation) == (width, height):
        if exif_orientation:
            problem += (
                f", the size of its pixels as stored: its EXIF orientation "
                f"({header.orientation}) turns them by 90 degrees, as viewers and annotation "
                f"tools show it. If the boxes were drawn on the pixels as stored, set "
                f"data.exif_orientation=false"
            )
        else:
            problem += (
                f", its size as viewers show it (EXIF orientation {header.orientation}, turned "
                f"by 90 degrees): set data.exif_orientation=true to read it turned"
            )
    return problem


@dataclass
class _ImageRecord:
    """One image kept for training or evaluation; boxes are validated XYXY in pixels."""

    image_id: int
    path: str
    height: int
    width: int
    boxes: np.ndarray  # float32 [N, 4] xyxy
    labels: np.ndarray  # int64 [N], contiguous labels 1..C
    # int64 [A], the label of every annotation of the image: the N training boxes plus crowd
    # (VOC difficult) boxes and boxes rejected as degenerate or outside, which the class prior
    # counts (docs/method.md §2)
    annotated_labels: np.ndarray
    # EXIF orientation the pixels are turned by when read (1: as stored; `labelmatch.data.images`)
    orientation: int = 1


class CocoDetection(torch.utils.data.Dataset):
    """A COCO annotation file plus its image folder, validated at construction.

    Validation (all before training starts):
      - unknown `category_id`, annotation of an unknown image, malformed bbox -> DataError;
      - bbox under 1 px wide or high (MMDetection's rule), or entirely outside its image ->
        rejected, counted (boxes of kept images only);
      - bbox partly outside its image -> clipped to it, counted;
      - `iscrowd=1` or `ignore=1` -> not a training target, counted (as crowd);
      - image without annotations -> kept as a background image;
      - image record without width/height, its file missing on disk, not an image (header
        unreadable) or of another size than its record -> DataError (with
        `skip_invalid=True`: the image is dropped and counted instead);
      - with `skip_invalid=True`, an annotation that would be a DataError (unknown
        `category_id`, malformed bbox, no integer id) drops its whole image (counted; dropping
        only the box would teach the model that the object is background), and one of an
        unknown image is dropped itself (counted).
    The counts are in `report` and logged once.

    `__getitem__` returns `(image, target)`: image a uint8 `tv_tensors.Image` [3, H, W] (RGB;
    uint16 from a 16-bit PNG), target `dict(boxes=BoundingBoxes XYXY float32 [N, 4],
    labels=int64 [N], image_id=int)`,
    or what `transforms(image, target)` returns. An image file that cannot be decoded, or
    whose size differs from its record, raises DataError; with `skip_invalid=True` it is
    logged as a warning naming the file, counted in `report["images_skipped_unreadable"]`
    (of the process that read it, e.g. a DataLoader worker) and `None` is returned, which
    the collate functions of `labelmatch.data.datamodule` drop, so such a batch comes out
    shorter.

    Attributes: `image_ids` (kept images, file order), `class_counts` (training boxes per
    label: index i = label i + 1), `prior_counts` (every annotation of the kept images per label,
    crowd / VOC-difficult and rejected boxes included: the class prior of docs/method.md §2 when
    this is the labeled file, counted as the official hook counts the labeled json's
    annotations), `report` (validation counts; `prior_boxes` is the sum of `prior_counts`),
    `coco` (the parsed json).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        category_map: CategoryMap,
        transforms: Callable[[tv_tensors.Image, dict], Any] | None = None,
        skip_invalid: bool = False,
        *,
        coco: dict | None = None,
        exif_orientation: bool = True,
    ) -> None:
        """`coco` may pass the already-parsed contents of `ann_file` to avoid a second parse.
        `exif_orientation`: read each image turned as its EXIF orientation tells viewers (the
        official loader's way, `labelmatch.data.images`), else its pixels as stored."""
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.category_map = category_map
        self.transforms = transforms
        self.skip_invalid = skip_invalid
        self.exif_orientation = exif_orientation
        self.coco = coco if coco is not None else load_coco_json(ann_file, require_categories=False)
        self.report: dict[str, Any] = {
            "file": str(self.ann_file),
            "images": 0,
            "background_images": 0,
            "images_skipped_missing": 0,
            "images_skipped_unreadable": 0,
            "images_skipped_bad_annotation": 0,
            "annotations_skipped_invalid": 0,
            "annotations": len(self.coco.get("annotations", [])),
            "boxes": 0,
            "crowd": 0,
            "clipped": 0,
            "rejected_degenerate": 0,
            "rejected_outside": 0,
            "prior_boxes": 0,
        }
        # Annotations of the box counts above (clipped, rejected_*), named in the warning.
        self._box_examples: dict[str, list[dict]] = {}
        self._records = self._build_records()
        self.image_ids: list[int] = [record.image_id for record in self._records]
        # Each kept image's file, links resolved: which files splits share, whatever folder
        # (or link to it) each split names.
        self.image_files: list[str] = [os.path.realpath(record.path) for record in self._records]
        self._warn_of_repeated_files()
        self.class_counts: list[int] = self._count_per_class("labels")
        self.prior_counts: list[int] = self._count_per_class("annotated_labels")
        self.report["prior_boxes"] = sum(self.prior_counts)
        self._log_report()

    # ---- construction -------------------------------------------------------------------

    def _build_records(self) -> list[_ImageRecord]:
        images, all_image_ids = self._read_image_records()
        boxes_of: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
        labels_of: dict[int, list[int]] = {image_id: [] for image_id in images}
        annotated_of: dict[int, list[int]] = {image_id: [] for image_id in images}
        # per image: (report count, annotation) of each annotation ("" when kept as it is)
        counts_of: dict[int, list[tuple[str, dict]]] = {image_id: [] for image_id in images}
        bad_images: set[int] = set()
        for annotation in self.coco.get("annotations", []):
            try:
                image_id, box, label, count = self._validate_annotation(
                    annotation, images, all_image_ids
                )
            except DataError as error:
                if not self.skip_invalid:
                    raise
                bad_images |= self._skip_annotation(annotation, images, error)
                continue
            if image_id in annotated_of:
                annotated_of[image_id].append(label)
                counts_of[image_id].append((count, annotation))
            if box is not None:
                boxes_of[image_id].append(box)
                labels_of[image_id].append(label)
        records = []
        for image_id, (path, height, width, orientation) in images.items():
            if image_id in bad_images:
                continue
            # The box counts of kept images only: a dropped image's boxes are in no count but
            # its own (images_skipped_bad_annotation).
            for count, annotation in counts_of[image_id]:
                if count:
                    self.report[count] += 1
                if count not in ("", "crowd"):
                    self._box_examples.setdefault(count, []).append(annotation)
            boxes = np.asarray(boxes_of[image_id], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(labels_of[image_id], dtype=np.int64)
            annotated = np.asarray(annotated_of[image_id], dtype=np.int64)
            records.append(
                _ImageRecord(image_id, path, height, width, boxes, labels, annotated, orientation)
            )
            self.report["boxes"] += len(labels)
            self.report["background_images"] += len(labels) == 0
        self.report["images"] = len(records)
        return records

    def _read_image_records(self) -> tuple[dict[int, tuple[str, int, int, int]], set[int]]:
        """(image id -> (path, height, width, EXIF orientation to apply) of every usable image
        in file order, all ids)."""
        images: dict[int, tuple[str, int, int, int]] = {}
        all_image_ids: set[int] = set()
        for position, image in enumerate(self.coco["images"]):
            if not isinstance(image, dict) or not is_integer(image.get("id")):
                raise DataError(f"{self.ann_file}: image entry {position} has no integer id")
            image_id, file_name = image["id"], image.get("file_name")
            where = f"{self.ann_file}: image id {image_id} ({file_name})"
            if image_id in all_image_ids:
                raise DataError(f"{where}: image id appears twice")
            all_image_ids.add(image_id)
            if not isinstance(file_name, str):
                raise DataError(f"{where}: missing 'file_name'")
            height, width = image.get("height"), image.get("width")
            path = os.path.join(self.image_dir, file_name)
            problem, counter, orientation = None, "images_skipped_missing", 1
            if not (is_positive_integer(height) and is_positive_integer(width)):
                problem = f"needs positive integer 'width' and 'height', got {width!r} x {height!r}"
            elif not os.path.exists(path):
                problem = f"image file {path} does not exist"
            else:
                counter = "images_skipped_unreadable"
                try:
                    header = read_header(path)
                except HEADER_ERRORS as error:
                    problem = f"cannot read image file {path}: {error}"
                else:
                    problem = _size_problem(header, int(height), int(width), self.exif_orientation)
                    orientation = header.orientation if self.exif_orientation else 1
            if problem is not None:
                if not self.skip_invalid:
                    raise DataError(f"{where}: {problem}")
                logger.warning("skipping %s: %s", where, problem)
                self.report[counter] += 1
                continue
            images[image_id] = (path, int(height), int(width), orientation)
        return images, all_image_ids

    def _skip_annotation(
        self, annotation: Any, images: dict[int, tuple[str, int, int, int]], error: DataError
    ) -> set[int]:
        """skip_invalid: count and log a bad annotation; returns the kept image it drops."""
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if is_integer(image_id) and image_id in images:
            logger.warning("skipping image id %s: %s", image_id, error)
            self.report["images_skipped_bad_annotation"] += 1
            return {image_id}
        logger.warning("skipping annotation: %s", error)
        self.report["annotations_skipped_invalid"] += 1
        return set()

    def _validate_annotation(
        self, annotation: Any, images: dict[int, tuple[str, int, int, int]], all_image_ids: set[int]
    ) -> tuple[int, list[float] | None, int, str]:
        """Returns (image id, clipped xyxy box or None when not a target, label, the report
        count the box adds to once its image is kept: "crowd", those of `_clip_box`, or "")."""
        annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
        where = f"{self.ann_file}: annotation id {annotation_id}"
        if not isinstance(annotation, dict) or not is_integer(annotation_id):
            raise DataError(f"{self.ann_file}: annotation without integer 'id': {annotation!r}")
        image_id = annotation.get("image_id")
        if not is_integer(image_id) or image_id not in all_image_ids:
            raise DataError(f"{where}: image_id {image_id!r} is not in 'images'")
        category_id = annotation.get("category_id")
        try:
            if not is_integer(category_id):
                raise UnknownCategoryError(category_id)
            label = self.category_map.to_label(category_id)
        except UnknownCategoryError:
            raise DataError(
                f"{where} (image id {image_id}): unknown category_id {category_id!r} "
                f"(known: {self.category_map.category_ids})"
            ) from None
        if "bbox" not in annotation:
            raise DataError(f"{where} (image id {image_id}): has no 'bbox'")
        bbox = annotation["bbox"]
        if not is_coco_box(bbox):
            raise DataError(
                f"{where} (image id {image_id}): bbox must be 4 finite numbers, got {bbox!r}"
            )
        if image_id not in images:  # its image was skipped (skip_invalid) and counted
            return image_id, None, label, ""
        if not is_training_box(annotation):  # counted with the crowd boxes
            return image_id, None, label, "crowd"
        _, height, width, _ = images[image_id]
        box, count = self._clip_box(bbox, height, width)
        return image_id, box, label, count

    @staticmethod
    def _clip_box(bbox: list[float], height: int, width: int) -> tuple[list[float] | None, str]:
        """COCO [x, y, w, h] -> (xyxy clipped to the image, or None when rejected; its count:
        "clipped", "rejected_degenerate", "rejected_outside" or "" for a box kept whole).

        Degenerate: under 1 px wide or high, MMDetection's `CocoDataset` rule (the official
        code's). Outside: under 1 px of it left inside the image, wide or high, once clipped
        (judged on the json's float64 values: in float32 a box 1 px wide at x = 0.3 is
        0.99999994 wide). MMDetection keeps any sliver with area and clips it after the resize.
        Here a sliver of 1e-5 px at an edge passed, and a flip (W - 1e-5 == W in float32) or a
        resize then gave it no width in the view, which stops training at torchvision's
        positive-size check; a box under 1 px inside is no object to learn either. One at
        least 1 px wide keeps a positive width in float32 through any flip and resize."""
        x, y, w, h = (float(v) for v in bbox)
        if w < 1 or h < 1:
            return None, "rejected_degenerate"
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(width)), min(y + h, float(height))
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None, "rejected_outside"
        clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
        return [x1, y1, x2, y2], "clipped" if clipped else ""

    def _count_per_class(self, field: str) -> list[int]:
        """Per label (index i = label i + 1), the records' `field` ("labels" or
        "annotated_labels") counted over the kept images."""
        counts = np.zeros(self.category_map.num_classes, dtype=np.int64)
        for record in self._records:
            labels = getattr(record, field)
            counts += np.bincount(labels - 1, minlength=self.category_map.num_classes)
        return counts.tolist()

    def _warn_of_repeated_files(self) -> None:
        """Image records that point at one file (a json merged from two sources, a record
        added twice): kept, as each record may carry its own boxes, but named."""
        first_id: dict[str, int] = {}
        repeated = []
        for image_id, path in zip(self.image_ids, self.image_files):
            if path in first_id:
                repeated.append(f"image id {image_id} (as id {first_id[path]}: {path})")
            first_id.setdefault(path, image_id)
        if repeated:
            logger.warning(
                "%s: %d image records point at a file an earlier record has: %s%s",
                self.ann_file, len(repeated), ", ".join(repeated[:3]),
                f" and {len(repeated) - 3} more" if len(repeated) > 3 else "",
            )  # fmt: skip

    def _log_report(self) -> None:
        logger.debug("%s", self.report)  # the split's row of `report_table`, at info level
        changed = (
            "images_skipped_missing",
            "images_skipped_unreadable",
            "images_skipped_bad_annotation",
            "annotations_skipped_invalid",
            "clipped",
            "rejected_degenerate",
            "rejected_outside",
        )
        problems = {key: self.report[key] for key in changed if self.report[key]}
        if problems:
            # Skipped images are named one by one as they are skipped; boxes by a few examples.
            examples = "".join(
                f"; {count}: "
                + ", ".join(
                    f"annotation id {a['id']} (image id {a['image_id']}) bbox {a['bbox']}"
                    for a in annotations[:3]
                )
                + (f" and {len(annotations) - 3} more" if len(annotations) > 3 else "")
                for count, annotations in self._box_examples.items()
            )
            logger.warning(
                "%s: validation changed or dropped: %s%s", self.ann_file, problems, examples
            )

    # ---- access -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def with_transforms(self, transforms: Callable | None) -> CocoDetection:
        """The same validated images under other transforms (nothing is re-read or re-checked)."""
        view = copy.copy(self)
        view.transforms = transforms
        return view

    def __getitem__(self, index: int) -> Any:
        record = self._records[index]
        image = self._read_image(record)
        if image is None:
            return None
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes.copy()),
                format=tv_tensors.BoundingBoxFormat.XYXY,
                canvas_size=(record.height, record.width),
            ),
            "labels": torch.from_numpy(record.labels.copy()),
            "image_id": record.image_id,
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def _read_image(self, record: _ImageRecord) -> tv_tensors.Image | None:
        where = f"{record.path} (image id {record.image_id}, {self.ann_file})"
        try:
            image = decode_rgb(record.path, record.orientation)
        except DECODE_ERRORS as error:
            problem = f"cannot read or decode image: {error}"
        else:
            if tuple(image.shape[-2:]) == (record.height, record.width):
                return tv_tensors.Image(image)
            problem = (
                f"image is {image.shape[-1]}x{image.shape[-2]} (w x h) but its record says "
                f"{record.width}x{record.height}"
            )
        if not self.skip_invalid:
            raise DataError(f"{where}: {problem}")
        logger.warning("skipping %s: %s", where, problem)
        self.report["images_skipped_unreadable"] += 1
        return None


# (column, report key(s) summed) of the data report table.
_REPORT_COLUMNS = (
    ("images", ("images",)),
    ("no box", ("background_images",)),
    ("boxes", ("boxes",)),
    ("crowd", ("crowd",)),
    ("prior boxes", ("prior_boxes",)),
    ("clipped", ("clipped",)),
    ("boxes dropped", ("rejected_degenerate", "rejected_outside", "annotations_skipped_invalid")),
    (
        "images skipped",
        ("images_skipped_missing", "images_skipped_unreadable", "images_skipped_bad_annotation"),
    ),
)


def report_table(reports: dict[str, dict[str, Any]]) -> str:
    """The validation reports of the splits as one small table, a row per split:

    split    images  no box  boxes  crowd  clipped  boxes dropped  images skipped  file
    labeled      16       0     59      0        0              0               0  labeled.json
    """
    header = ["split", *(name for name, _ in _REPORT_COLUMNS), "file"]
    rows = [
        [split, *(str(sum(report[key] for key in keys)) for _, keys in _REPORT_COLUMNS),
         report["file"]]
        for split, report in reports.items()
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        numbers = (cell.rjust(width) for cell, width in zip(cells[1:-1], widths[1:]))
        return "  ".join([first, *numbers, cells[-1]])

    return "\n".join(line(cells) for cells in [header, *rows])
