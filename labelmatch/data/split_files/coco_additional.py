"""COCO-additional (docs/method.md §6): all of train2017 labeled, the 123k images of
`image_info_unlabeled2017.json` unlabeled, val2017 evaluated.

`image_info_unlabeled2017.json` lists images only; the conversion writes it as an ordinary COCO
annotation file (train2017's categories, no annotations), the form other codebases' loaders
(MMDetection's CocoDataset) need for an unlabeled split.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from labelmatch.data.coco import load_coco_json
from labelmatch.data.split_files.files import coco_split_dir, write_json_atomic

log = logging.getLogger(__name__)


def unlabeled_as_coco(image_info: dict, categories: list[dict]) -> dict:
    """The images of an image-info file as a COCO file with `categories` and no annotations."""
    coco = {"images": image_info["images"], "annotations": [], "categories": categories}
    if "info" in image_info:
        coco["info"] = image_info["info"]
    return coco


def unlabeled2017_path(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> Path:
    return coco_split_dir(data_dir, out_dir) / "instances_unlabeled2017.json"


def write_coco_additional(
    data_dir: str | os.PathLike,
    overwrite: bool = False,
    out_dir: str | os.PathLike | None = None,
) -> Path:
    """Write `instances_unlabeled2017.json` into `out_dir` (default
    `data_dir/annotations/semi_supervised/`; reused if present)."""
    annotations = Path(data_dir) / "annotations"
    out = unlabeled2017_path(data_dir, out_dir)
    if out.is_file() and not overwrite:
        log.debug("reusing %s", out)
        return out
    image_info = load_coco_json(
        annotations / "image_info_unlabeled2017.json", require_categories=False
    )
    categories = load_coco_json(annotations / "instances_train2017.json")["categories"]
    write_json_atomic(out, unlabeled_as_coco(image_info, categories))
    log.info("wrote %s: %d unlabeled images", out, len(image_info["images"]))
    return out
