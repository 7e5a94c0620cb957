"""Writing split files: COCO subsets laid out as the reference tools write them, atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Top-level keys copied from the source file, in the order STAC / MMDetection write them.
_COPIED_KEYS = ("licenses", "categories", "info")


def write_json_atomic(path: Path, content: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers and concurrent
    writers (e.g. several DDP ranks preparing the same split) never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(content, file)
        os.chmod(staging, 0o644)  # mkstemp makes it private
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def coco_subset(coco: dict, images: Sequence[dict]) -> dict:
    """The COCO file of `images` (kept in the given order): their annotations in file order,
    and the source's licenses, categories and info."""
    image_ids = {image["id"] for image in images}
    subset: dict[str, Any] = {
        "images": list(images),
        "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in image_ids],
    }
    subset.update({key: coco[key] for key in _COPIED_KEYS if key in coco})
    return subset


def split_name(seed: int, percent: float, prefix: str = "instances_train2017") -> str:
    """`instances_train2017.{seed}@{percent}` (docs/method.md §6); `percent` written as 1, 5, 10,
    or 0.5 when fractional."""
    return f"{prefix}.{seed}@{percent:g}"


def split_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """(labeled, unlabeled) files of split `name`: `directory/name{,-unlabeled}.json`."""
    return directory / f"{name}.json", directory / f"{name}-unlabeled.json"
