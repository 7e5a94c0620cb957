"""What every embedded (locally generated, never downloaded) dataset shares: placing objects on
a canvas without overlap, tight ink boxes, writing canvases as COCO splits, caching a generated
dataset under the hash of its parameters, and COCO-standard folds over a generated train pool.

A dataset module (`digits`, `glyphs`) only says how one canvas is drawn; the files, the cache
and the folds come from here, so every embedded dataset is laid out and reused the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from labelmatch.data.coco import CocoSplits
from labelmatch.data.split_files.folds import write_fold

logger = logging.getLogger(__name__)

_PLACEMENT_ATTEMPTS = 100
# Per image file type, the fastest encoding that keeps files small. PNG at level 1: noisy
# canvases do not compress anyway. JPEG at quality 95 for large pools: about a tenth of the
# encoding time and a fifth of the size of PNG on noisy canvases, artefacts well below the noise.
_IMAGE_ENCODINGS = {".png": {"compress_level": 1}, ".jpg": {"quality": 95}}

# (canvas uint8 [H, W, 3], [(category_id, [x, y, w, h] ink box)], objects that found no spot)
DrawnCanvas = tuple[np.ndarray, list[tuple[int, list[int]]], int]


# What an unlabeled pool's class prior may be instead of the labeled one (issue #17: ACT's
# labeled prior is then wrong, docs/method.md §2 "Estimated prior"). None: the same prior.
UNLABELED_CLASS_PRIORS = ("reversed", "uniform")


def shifted_class_probabilities(probabilities: np.ndarray, shift: str | None) -> np.ndarray:
    """The class probabilities [K] of an unlabeled pool that follows another distribution.

    "reversed": the frequency ranking turned upside down, the same shares handed out in the
    opposite order (the k-th most frequent class gets the k-th least frequent's share), so the
    labeled tail becomes the unlabeled head; "uniform": every class 1/K; None: unchanged.
    """
    if shift is None:
        return probabilities
    if shift == "uniform":
        return np.full(len(probabilities), 1.0 / len(probabilities))
    if shift == "reversed":
        order = np.argsort(-probabilities, kind="stable")  # head first
        reversed_shares = np.empty_like(probabilities)
        reversed_shares[order] = probabilities[order[::-1]]
        return reversed_shares
    raise ValueError(
        f"unlabeled_class_prior must be one of {UNLABELED_CLASS_PRIORS} or None, got {shift!r}"
    )


def with_unlabeled_prior(params: dict, shift: str | None) -> dict:
    """`params` with the key "unlabeled_class_prior" only when there is a shift: an unshifted
    dataset keeps the parameters, hence the cache folder and the files, it had before the key
    existed."""
    shifted_class_probabilities(np.ones(2) / 2, shift)  # rejects an unknown name early
    return params if shift is None else {**params, "unlabeled_class_prior": shift}


class SplitSpec(NamedTuple):
    """One COCO file to write: its name, how many canvases, and how one canvas is drawn."""

    name: str
    num_images: int
    draw: Callable[[np.random.Generator], DrawnCanvas]


def ink_box(ink: np.ndarray, x: int, y: int) -> list[int]:
    """Tight COCO box [x, y, w, h] of the non-zero pixels of `ink` [h, w] placed at (x, y)."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    width, height = int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    return [x + int(cols[0]), y + int(rows[0]), width, height]


def _apart(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Whether two (x, y, size) squares share no pixel."""
    (ax, ay, a_size), (bx, by, b_size) = a, b
    return ax >= bx + b_size or bx >= ax + a_size or ay >= by + b_size or by >= ay + a_size


def free_spot(
    rng: np.random.Generator, canvas_size: int, size: int, taken: list[tuple[int, int, int]]
) -> tuple[int, int] | None:
    """Top-left (x, y) of a size x size square overlapping no taken (x, y, size) square, or
    None when `_PLACEMENT_ATTEMPTS` uniform draws all collide or the square is larger than the
    canvas (a wide glyph on a small canvas: no draw, so a square that fits draws as before)."""
    if size > canvas_size:
        return None
    for _ in range(_PLACEMENT_ATTEMPTS):
        x, y = (int(v) for v in rng.integers(0, canvas_size - size + 1, size=2))
        if all(_apart((x, y, size), square) for square in taken):
            return x, y
    return None


def _coco_annotation(annotation_id: int, image_id: int, category_id: int, box: list[int]) -> dict:
    x, y, w, h = box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": 0,
    }


def write_coco_splits(
    directory: Path,
    dataset: str,
    params: dict,
    categories: list[dict],
    splits: Sequence[SplitSpec],
    image_suffix: str = ".png",
) -> None:
    """Draw every split's canvases into `directory`/images and write `<split name>.json` each.

    Split i draws from its own random stream (child i of `params["seed"]`), so e.g. the train
    canvases do not change with the number of val canvases. Image and annotation ids are
    unique over all splits. `image_suffix` (".png" or ".jpg") sets the image files' type.
    """
    encoding = _IMAGE_ENCODINGS[image_suffix]
    rngs = [
        np.random.default_rng(s) for s in np.random.SeedSequence(params["seed"]).spawn(len(splits))
    ]
    (directory / "images").mkdir()
    image_id = annotation_id = 1
    for split, rng in zip(splits, rngs):
        images, annotations, not_placed = [], [], 0
        for _ in range(split.num_images):
            canvas, objects, missed = split.draw(rng)
            not_placed += missed
            file_name = f"{image_id:07d}{image_suffix}"
            Image.fromarray(canvas).save(directory / "images" / file_name, **encoding)
            height, width = canvas.shape[:2]
            images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
            for category_id, box in objects:
                annotations.append(_coco_annotation(annotation_id, image_id, category_id, box))
                annotation_id += 1
            image_id += 1
        if not_placed:
            logger.info(
                "%s %s: %d objects found no free spot, left out", dataset, split.name, not_placed
            )
        info = {"description": f"labelmatch {dataset}, {split.name} split", "parameters": params}
        info[f"{dataset}_not_placed"] = not_placed
        coco = {"info": info, "images": images, "annotations": annotations}
        coco["categories"] = categories
        (directory / f"{split.name}.json").write_text(json.dumps(coco))


def cached_dataset(root: str | os.PathLike, params: dict, write: Callable[[Path], None]) -> Path:
    """`root/<hash of params>/`, written by `write(folder)` the first time and reused after.

    `params` must hold everything the drawing depends on, a generator version included, so a
    change of the generator gets a folder of its own. The folder is written under a temporary
    name and published with an atomic rename, so concurrent callers (DDP ranks, parallel test
    sessions) never see a partial dataset.
    """
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(root)
    directory = root / key
    if not directory.is_dir():  # only ever created complete, by the rename below
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            write(staging)
            os.chmod(staging, 0o755)  # mkdtemp makes it private
            os.replace(staging, directory)
            logger.info("generated embedded dataset %s", directory)
        except OSError:
            if not directory.is_dir():  # not a lost race with another process
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def fold_splits(
    image_dir: Path, train_json: Path, val_json: Path, fold: int, percent: float
) -> CocoSplits:
    """`percent` % of the canvases of `train_json` labeled by the COCO-standard fold sampler
    (`labelmatch.data.split_files.folds`, fold `fold`), the rest unlabeled, `val_json` for
    validation.

    The fold files go to `semi_supervised/train.{fold}@{percent}.json` and `...-unlabeled.json`
    beside `train_json`, with their sidecar, and are reused once written.
    """
    labeled, unlabeled = write_fold(
        train_json, train_json.parent / "semi_supervised", fold, percent, "train", overwrite=False
    )
    return CocoSplits(image_dir, labeled, unlabeled, val_json)
