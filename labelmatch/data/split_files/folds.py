"""COCO-standard folds: the labeled/unlabeled splits of STAC, reused by the official LabelMatch
code and MMDetection 3 (docs/method.md §6), so that results compare on the same labeled images.

The reference algorithm (STAC `prepare_coco_data.py`, MMDetection `tools/misc/split_coco.py`):
`np.random.seed(fold)`, then `np.random.choice(range(N), size=int(percent / 100. * N))` over the
images of `instances_train2017.json` in file order, WITH replacement; labeled = the images whose
position was drawn, unlabeled = the rest, both in file order; annotations follow their images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from labelmatch.data.coco import load_coco_json
from labelmatch.data.errors import DataError
from labelmatch.data.split_files.files import (
    check_split_source,
    coco_split_dir,
    coco_subset,
    split_name,
    split_paths,
    write_json_atomic,
)
from labelmatch.data.split_files.sidecar import sidecar_content, sidecar_path

log = logging.getLogger(__name__)


def stac_labeled_positions(num_images: int, percent: float, seed: int) -> np.ndarray:
    """Sorted unique positions (0-based, file order) of fold `seed`'s labeled images. [M]

    `RandomState(seed)` is the generator `np.random.seed(seed)` seeds, and `choice(N)` draws
    exactly as `choice(range(N))`, so this equals the reference without touching numpy's
    global state. Drawing with replacement makes M smaller than the draws: 1 % of 118,287
    images is 1,182 draws but about 1,174 images.
    """
    if not 0 < percent <= 100:  # 0 wrote an empty split, 150 one of 75 %, -1 a numpy error
        raise DataError(f"the labeled percent must lie in (0, 100], got {percent}")
    draws = np.random.RandomState(seed).choice(num_images, size=int(percent / 100.0 * num_images))
    return np.unique(draws)


def stac_split(coco: dict, percent: float, seed: int) -> tuple[dict, dict]:
    """(labeled, unlabeled) COCO dicts of fold `seed` at `percent` % of `coco`'s images."""
    images = coco["images"]
    drawn = set(stac_labeled_positions(len(images), percent, seed).tolist())
    labeled = [image for position, image in enumerate(images) if position in drawn]
    unlabeled = [image for position, image in enumerate(images) if position not in drawn]
    return coco_subset(coco, labeled), coco_subset(coco, unlabeled)


def write_fold(
    source_json: Path, out_dir: Path, seed: int, percent: float, prefix: str, overwrite: bool
) -> tuple[Path, Path]:
    """Write fold `seed` @ `percent` of `source_json` as `out_dir/{prefix}.{seed}@{percent}.json`
    and `...-unlabeled.json` (plus the labeled file's sidecar). Existing files are reused
    unless `overwrite`, so splits written by other codebases drop in."""
    labeled_path, unlabeled_path = split_paths(out_dir, split_name(seed, percent, prefix))
    if labeled_path.is_file() and unlabeled_path.is_file() and not overwrite:
        log.debug("reusing the existing split %s", labeled_path)
        return labeled_path, unlabeled_path
    coco = load_coco_json(source_json)
    check_split_source(coco, source_json)
    labeled, unlabeled = stac_split(coco, percent, seed)
    provenance = {
        "source": os.fspath(source_json),
        "sampler": "STAC fold (np.random.seed(fold); np.random.choice with replacement)",
        "fold": seed,
        "percent": percent,
    }
    write_split(labeled_path, unlabeled_path, labeled, unlabeled, provenance)
    return labeled_path, unlabeled_path


def write_split(
    labeled_path: Path, unlabeled_path: Path, labeled: dict, unlabeled: dict, provenance: dict
) -> None:
    """Write a split's two files (the labeled one last: its presence marks a complete split)
    and the labeled file's sidecar with `provenance`."""
    # Everything is computed before the first write: a failure half-way left the two split
    # files without their sidecar, and a rerun was refused because they existed.
    sidecar = sidecar_content(labeled_path, labeled, provenance)
    write_json_atomic(unlabeled_path, unlabeled)
    write_json_atomic(labeled_path, labeled)
    write_json_atomic(sidecar_path(labeled_path), sidecar)
    log.info(
        "wrote %s: %d labeled images (%d annotations), %d unlabeled (%d annotations)",
        labeled_path,
        len(labeled["images"]),
        len(labeled["annotations"]),
        len(unlabeled["images"]),
        len(unlabeled["annotations"]),
    )


def write_coco_standard(
    data_dir: str | os.PathLike,
    seed: int,
    percent: float,
    overwrite: bool = False,
    out_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """COCO-standard fold files in `out_dir` (default `data_dir/annotations/semi_supervised/`,
    docs/method.md §6)."""
    return write_fold(
        Path(data_dir) / "annotations" / "instances_train2017.json",
        coco_split_dir(data_dir, out_dir),
        seed,
        percent,
        prefix="instances_train2017",
        overwrite=overwrite,
    )
