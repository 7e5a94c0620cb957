"""Unbiased Teacher's labeled sets (`dataseed/COCO_supervision.txt`) as COCO json pairs.

That file is one JSON object `{percent_str: {seed_str: [positions]}}`, percent_str as Python
prints a float ("1.0" = 1 %), seeds "0"-"9". Positions (not image ids) index train2017 as
detectron2 loads it for Unbiased Teacher: sorted by image id, without the images that have no
non-crowd annotation (117,266 of 118,287 images) (docs/method.md §6). Unbiased Teacher's unlabeled
set is the rest of that list, so the dropped images are in neither file (counted in the log and
the sidecar).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from labelmatch.data.coco import load_coco_json
from labelmatch.data.errors import DataError
from labelmatch.data.split_files.files import (
    check_split_source,
    coco_split_dir,
    coco_subset,
    split_paths,
)
from labelmatch.data.split_files.folds import write_split

log = logging.getLogger(__name__)


def ut_split_name(seed: int, percent: float) -> str:
    """`instances_train2017.ut{seed}@{percent}`: apart from the STAC folds of the same numbers."""
    return f"instances_train2017.ut{seed}@{percent:g}"


def ut_image_order(coco: dict) -> list[dict]:
    """The images Unbiased Teacher's positions index: sorted by id, those with at least one
    annotation with iscrowd=0 (detectron2's filter_images_with_only_crowd_annotations)."""
    with_objects = {a["image_id"] for a in coco.get("annotations", []) if not a.get("iscrowd", 0)}
    return sorted((i for i in coco["images"] if i["id"] in with_objects), key=lambda i: i["id"])


def ut_positions(supervision: dict, percent: float, seed: int, source: str) -> list[int]:
    """The position list of (percent, seed) in a parsed COCO_supervision.txt."""
    percent_key, seed_key = str(float(percent)), str(seed)
    if percent_key not in supervision:
        raise DataError(f"{source}: no percent {percent_key!r} (has {sorted(supervision)})")
    if seed_key not in supervision[percent_key]:
        raise DataError(
            f"{source}: percent {percent_key!r} has no seed {seed_key!r} "
            f"(has {sorted(supervision[percent_key])})"
        )
    return supervision[percent_key][seed_key]


def ut_split(coco: dict, positions: list[int], percent: float, source: str) -> tuple[dict, dict]:
    """(labeled, unlabeled) COCO dicts: the images at `positions` of `ut_image_order(coco)` and
    the rest of it, both in that order (by image id)."""
    images = ut_image_order(coco)
    expected = int(percent / 100.0 * len(images))  # Unbiased Teacher asserts this count
    if len(positions) != expected:
        raise DataError(
            f"{source}: {len(positions)} positions for {percent:g} %, but {percent:g} % of the "
            f"{len(images)} train images with objects is {expected}: not the same train2017 file"
        )
    bad = [p for p in positions if not isinstance(p, int) or not 0 <= p < len(images)]
    if bad or len(set(positions)) != len(positions):
        problem = f"out of range 0..{len(images) - 1}: {bad[:5]}" if bad else "repeated positions"
        raise DataError(f"{source}: percent {percent:g}: {problem}")
    chosen = set(positions)
    labeled = [image for position, image in enumerate(images) if position in chosen]
    unlabeled = [image for position, image in enumerate(images) if position not in chosen]
    return coco_subset(coco, labeled), coco_subset(coco, unlabeled)


def write_ut_split(
    data_dir: str | os.PathLike,
    supervision_file: str | os.PathLike,
    percent: float,
    seed: int,
    overwrite: bool = False,
    out_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write `instances_train2017.ut{seed}@{percent}.json`, its `-unlabeled.json` and the
    labeled file's sidecar into `out_dir` (default `data_dir/annotations/semi_supervised/`)."""
    annotations = Path(data_dir) / "annotations"
    split_dir = coco_split_dir(data_dir, out_dir)
    labeled_path, unlabeled_path = split_paths(split_dir, ut_split_name(seed, percent))
    if labeled_path.is_file() and unlabeled_path.is_file() and not overwrite:
        log.debug("reusing the existing split %s", labeled_path)
        return labeled_path, unlabeled_path
    source = annotations / "instances_train2017.json"
    coco = load_coco_json(source)
    check_split_source(coco, source)
    supervision_file = Path(supervision_file)
    if not supervision_file.is_file():
        raise DataError(f"{supervision_file}: Unbiased Teacher supervision file does not exist")
    try:
        supervision = json.loads(supervision_file.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{supervision_file}: invalid JSON: {error}") from error
    positions = ut_positions(supervision, percent, seed, str(supervision_file))
    labeled, unlabeled = ut_split(coco, positions, percent, str(supervision_file))
    dropped = len(coco["images"]) - len(labeled["images"]) - len(unlabeled["images"])
    provenance = {
        "source": os.fspath(source),
        "sampler": f"Unbiased Teacher positions from {supervision_file.name}",
        "seed": seed,
        "percent": percent,
        "images_without_objects_left_out": dropped,
    }
    write_split(labeled_path, unlabeled_path, labeled, unlabeled, provenance)
    log.info(
        "%d images of %s without non-crowd objects are in neither file (as in Unbiased Teacher)",
        dropped,
        source,
    )
    return labeled_path, unlabeled_path
