"""Writing split files: COCO subsets laid out as the reference tools write them, atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelmatch.data.coco import is_integer
from labelmatch.data.errors import DataError

# Top-level keys copied from the source file, in the order STAC / MMDetection write them.
_COPIED_KEYS = ("licenses", "categories", "info")


def write_json_atomic(path: Path, content: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers and concurrent
    writers (e.g. several DDP ranks preparing the same split) never see a partial file.

    A folder that cannot be written (a read-only dataset copy on a cluster, a full disk) is a
    DataError naming the file and where else split files can go.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    except OSError as error:
        raise _unwritable(path, error) from error
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(content, file)
        os.chmod(staging, 0o644)  # mkstemp makes it private
        os.replace(staging, path)
    except OSError as error:
        raise _unwritable(path, error) from error
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def _unwritable(path: Path, error: OSError) -> DataError:
    return DataError(
        f"{path}: cannot write it ({error.strerror or error}); write split files to a folder "
        "you can write to: data.splits.split_dir=DIR for a run, --out-dir DIR (or --out DIR) "
        "for `python -m labelmatch.prepare`"
    )


def check_image_ids(coco: dict, path: Path) -> set[int]:
    """The image ids of `coco` (read from `path`), or a DataError naming `path` and the record:
    each image record an object with an integer 'id' (as training reads them, `CocoDetection`),
    none repeated."""
    image_ids: set[int] = set()
    for position, image in enumerate(coco["images"]):
        if not isinstance(image, dict) or not is_integer(image.get("id")):
            raise DataError(
                f"{path}: image record {position} needs an integer 'id' (training reads integer "
                f"image ids only), got {image!r}"
            )
        if image["id"] in image_ids:
            raise DataError(f"{path}: image id {image['id']} appears twice in 'images'")
        image_ids.add(image["id"])
    return image_ids


def check_split_source(coco: dict, path: Path) -> None:
    """DataError naming `path` and the record for what a split reads: image objects with
    unique integer ids (`check_image_ids`), and annotation objects of known images and
    categories, by integer ids (checked before any sampler indexes them, so a bad record is
    named, not a KeyError or TypeError).

    Integer ids, as training reads them (`CocoDetection`): a split of string ids was written
    and then refused by the run, and one of mixed ids stopped the sidecar's sort after the
    two split files were written; an id 1.0 or true (Python's 1) was written and then refused,
    and a list stopped the lookup with a TypeError."""
    image_ids = check_image_ids(coco, path)
    category_ids = {category.get("id") for category in coco["categories"]}
    for position, annotation in enumerate(coco.get("annotations", [])):
        if not isinstance(annotation, dict):
            raise DataError(
                f"{path}: annotation record {position} must be an object, got {annotation!r}"
            )
        name = f"annotation id {annotation.get('id', f'at position {position}')}"
        image_id = annotation.get("image_id")
        if not (is_integer(image_id) and image_id in image_ids):
            raise DataError(f"{path}: {name}: image_id {image_id!r} is not in 'images'")
        category_id = annotation.get("category_id")
        if not (is_integer(category_id) and category_id in category_ids):
            raise DataError(
                f"{path}: {name}: unknown category_id {category_id!r} "
                f"(known: {sorted(category_ids)})"
            )


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


def coco_split_dir(data_dir: str | os.PathLike, split_dir: str | os.PathLike | None) -> Path:
    """Where a COCO 2017 directory's split files go: `split_dir`, or by default
    `data_dir/annotations/semi_supervised` (the layout STAC and MMDetection use)."""
    if split_dir is not None:
        return Path(split_dir)
    return Path(data_dir) / "annotations" / "semi_supervised"


def split_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """(labeled, unlabeled) files of split `name`: `directory/name{,-unlabeled}.json`."""
    return directory / f"{name}.json", directory / f"{name}-unlabeled.json"
