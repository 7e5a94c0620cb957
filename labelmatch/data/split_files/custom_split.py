"""A labeled/unlabeled split of the user's own COCO json: a random percentage of its images, or
K annotated images per class.

`--percent P` draws round(P / 100 * N) images without replacement (unlike the STAC folds, which
draw with replacement to reproduce published splits). `--per-class K` is a greedy cover: classes
are visited rarest first (fewest images containing them), and for each one images containing it
are drawn at random until K labeled images contain it, counting those drawn for earlier classes.
A class found in fewer than K images gets all of them and is reported. Both keep the images in
file order; the unlabeled file is the rest, with its annotations (used only for statistics).
A labeled part without a box to train on (a small percent that drew only background or crowd
images) is refused, as is a json without any such box: the run would train on nothing.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from labelmatch.data.coco import is_training_box, load_coco_json
from labelmatch.data.errors import DataError
from labelmatch.data.split_files.files import (
    check_split_source,
    coco_subset,
    split_name,
    split_paths,
)
from labelmatch.data.split_files.folds import write_split


def percent_split(
    coco: dict, percent: float, seed: int, source: str | os.PathLike = "the json"
) -> tuple[dict, dict]:
    """(labeled, unlabeled): round(percent % of the images), drawn without replacement. Both
    must hold an image (`source` names the file in the error): 100 % would leave no unlabeled
    image, and so would a percent that rounds to all of them."""
    if not 0 < percent < 100:
        raise DataError(f"--percent must be in (0, 100), got {percent:g}")
    images = coco["images"]
    count = round(percent / 100 * len(images))
    if count == 0:
        raise DataError(
            f"{source}: {percent:g} % of its {len(images)} images is no image: raise --percent"
        )
    if count == len(images):
        raise DataError(
            f"{source}: {percent:g} % of its {len(images)} images is every image, which leaves "
            f"no unlabeled image: lower --percent"
        )
    drawn = set(np.random.default_rng(seed).choice(len(images), size=count, replace=False).tolist())
    labeled = [image for position, image in enumerate(images) if position in drawn]
    unlabeled = [image for position, image in enumerate(images) if position not in drawn]
    return coco_subset(coco, labeled), coco_subset(coco, unlabeled)


def check_labeled_boxes(labeled: dict, source: Path, how: str) -> None:
    """DataError naming `source` when the labeled part drawn (`how`, e.g. "5 % of 12 images")
    has no box to train on: the run would train its supervised loss on background only."""
    if any(is_training_box(annotation) for annotation in labeled["annotations"]):
        return
    raise DataError(
        f"{source}: the {len(labeled['images'])} labeled images drawn ({how}) have no box to "
        f"train on (no annotation that is not crowd or ignore): use a larger --percent, or "
        f"--per-class K, which draws K images with boxes of every class"
    )


def images_per_class(coco: dict) -> dict[int, list[int]]:
    """Category id -> positions (file order) of the images with a box of it to train on
    (`is_training_box`); every category is a key, those without any image too."""
    position_of = {image["id"]: position for position, image in enumerate(coco["images"])}
    positions: dict[int, set[int]] = defaultdict(set)
    for annotation in coco.get("annotations", []):
        if is_training_box(annotation):  # a crowd or ignore box would cover no class
            positions[annotation["category_id"]].add(position_of[annotation["image_id"]])
    return {c["id"]: sorted(positions[c["id"]]) for c in coco["categories"]}


def per_class_split(coco: dict, k: int, seed: int) -> tuple[dict, dict, list[dict[str, Any]]]:
    """(labeled, unlabeled, short classes): the greedy cover of K images per class (module
    docstring). Each short class is {category_id, name, labeled_images, available_images}."""
    if k < 1:
        raise DataError(f"--per-class must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    containing = images_per_class(coco)
    names = {c["id"]: c.get("name", str(c["id"])) for c in coco["categories"]}
    chosen: set[int] = set()
    short = []
    # Rarest first: a rare class's few images are drawn before common classes fill the budget,
    # and the common classes' later draws are counted against their K.
    for category_id in sorted(containing, key=lambda c: (len(containing[c]), c)):
        positions = containing[category_id]
        have = sum(position in chosen for position in positions)
        candidates = [position for position in positions if position not in chosen]
        drawn = rng.permutation(candidates)[: max(0, k - have)].tolist()
        chosen.update(drawn)
        if have + len(drawn) < k:
            short.append(
                {
                    "category_id": category_id,
                    "name": names[category_id],
                    "labeled_images": have + len(drawn),
                    "available_images": len(positions),
                }
            )
    if not chosen:
        raise DataError("no annotated image to draw from: the json has no box to train on")
    images = coco["images"]
    labeled = [image for position, image in enumerate(images) if position in chosen]
    unlabeled = [image for position, image in enumerate(images) if position not in chosen]
    return coco_subset(coco, labeled), coco_subset(coco, unlabeled), short


def write_custom_split(
    labeled_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    percent: float | None = None,
    per_class: int | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Split `labeled_json` by `percent` or `per_class` (exactly one) into
    `out_dir/{stem}.{seed}@{percent}.json` or `{stem}.{seed}@{K}per_class.json`, its
    `-unlabeled.json` and the labeled file's sidecar. Returns both paths and the classes that
    could not reach K (empty for `percent`)."""
    if (percent is None) == (per_class is None):
        raise DataError("give exactly one of --percent and --per-class")
    source = Path(labeled_json)
    coco = load_coco_json(source)
    check_split_source(coco, source)
    annotations = coco.get("annotations", [])
    if not any(is_training_box(annotation) for annotation in annotations):
        raise DataError(
            f"{source}: no box to train on in the whole file ({len(annotations)} annotations, "
            "none that is not crowd or ignore)"
        )
    stem = source.name.removesuffix(".json")
    short: list[dict[str, Any]] = []
    if percent is not None:
        labeled, unlabeled = percent_split(coco, percent, seed, source)
        check_labeled_boxes(labeled, source, f"{percent:g} % of {len(coco['images'])} images")
        name = split_name(seed, percent, prefix=stem)
        provenance = {
            "sampler": "numpy default_rng(seed).choice, no replacement",
            "percent": percent,
        }
    else:
        labeled, unlabeled, short = per_class_split(coco, per_class, seed)
        if not unlabeled["images"]:
            raise DataError(
                f"{source}: --per-class {per_class} draws every one of its "
                f"{len(coco['images'])} images, which leaves no unlabeled image: lower --per-class"
            )
        name = f"{stem}.{seed}@{per_class}per_class"
        provenance = {
            "sampler": "greedy cover, rarest class first, numpy default_rng(seed)",
            "per_class": per_class,
            "classes_below_per_class": short,
        }
    labeled_path, unlabeled_path = split_paths(Path(out_dir), name)
    for path in (labeled_path, unlabeled_path):
        if path.exists() and not overwrite:
            raise DataError(f"{path} exists: pass --overwrite to replace it")
    provenance = {"source": os.fspath(source), "seed": seed, **provenance}
    write_split(labeled_path, unlabeled_path, labeled, unlabeled, provenance)
    return labeled_path, unlabeled_path, short
