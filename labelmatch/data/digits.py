"""The embedded default dataset: canvases of scikit-learn's 8x8 handwritten digits.

No download: `sklearn.datasets.load_digits` ships with scikit-learn. Each canvas is a light,
slightly noisy RGB background with 2-6 non-overlapping dark digits of random size; a digit's
box is the tight box of its ink. Digit k is drawn with probability proportional to
`tail_ratio ** (-k / 9)`, a long tail like COCO's, which is what ACT's label-distribution
prior (docs/method.md §2) is about. Category ids are 1..10 with names "0".."9".

Validation canvases use other sklearn images than training canvases (a fixed per-class
split), so validation measures generalisation to unseen handwriting.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from labelmatch.data.coco import CocoSplits
from labelmatch.data.embedded import (
    DrawnCanvas,
    SplitSpec,
    cached_dataset,
    fold_splits,
    free_spot,
    ink_box,
    shifted_class_probabilities,
    with_unlabeled_prior,
    write_coco_splits,
)

# Bump when the drawing changes, so that cached datasets of an older drawing are not reused.
_GENERATOR_VERSION = 2
_NUM_CLASSES = 10
# The last 20 % of each class's sklearn images (in sklearn's order) feed validation canvases.
_VAL_SOURCE_FRACTION = 0.2
# Upscaled sklearn intensities (0..1) below this are background, not ink.
_INK_THRESHOLD = 0.2
_CATEGORIES = [{"id": k + 1, "name": str(k), "supercategory": "digit"} for k in range(10)]


def class_probabilities(tail_ratio: float) -> np.ndarray:
    """P(digit k) proportional to tail_ratio ** (-k / 9): digit 0 is `tail_ratio` x digit 9. [10]"""
    weights = float(tail_ratio) ** (-np.arange(_NUM_CLASSES) / (_NUM_CLASSES - 1))
    return weights / weights.sum()


def digit_source_split(targets: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per digit class, the indices of sklearn images (`targets` = `load_digits().target`)
    for training canvases and for validation canvases.

    Fixed (seed-independent), so validation digits never appear in training canvases.
    """
    train, val = [], []
    for k in range(_NUM_CLASSES):
        indices = np.flatnonzero(targets == k)
        cut = len(indices) - round(_VAL_SOURCE_FRACTION * len(indices))
        train.append(indices[:cut])
        val.append(indices[cut:])
    return train, val


def _digit_ink(source: np.ndarray, size: int) -> np.ndarray:
    """sklearn digit [8, 8] in 0..1 -> ink opacity [size, size] in 0..1, exactly 0 off the ink."""
    upscaled = np.asarray(Image.fromarray(source.astype(np.float32)).resize((size, size)))
    # At least 25 % opaque wherever there is ink, so that the tight box's edges are visible.
    opacity = np.clip((upscaled - _INK_THRESHOLD) / (0.8 - _INK_THRESHOLD), 0.25, 1.0)
    return np.where(upscaled > _INK_THRESHOLD, opacity, 0.0).astype(np.float32)


def _draw_canvas(
    rng: np.random.Generator,
    digit_images: np.ndarray,
    sources: list[np.ndarray],
    params: dict,
    probabilities: np.ndarray,
) -> DrawnCanvas:
    """One canvas: (uint8 [S, S, 3], [(category id, [x, y, w, h] ink box)], digits not placed)."""
    size = params["image_size"]
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = rng.uniform(190.0, 250.0, size=3)  # light background colour
    objects: list[tuple[int, list[int]]] = []
    taken: list[tuple[int, int, int]] = []
    not_placed = 0
    for _ in range(int(rng.integers(params["min_digits"], params["max_digits"] + 1))):
        digit = int(rng.choice(_NUM_CLASSES, p=probabilities))
        source = digit_images[rng.choice(sources[digit])]
        digit_size = int(rng.integers(params["min_digit_size"], params["max_digit_size"] + 1))
        spot = free_spot(rng, size, digit_size, taken)
        if spot is None:
            not_placed += 1
            continue
        x, y = spot
        taken.append((x, y, digit_size))
        ink = _digit_ink(source, digit_size)[..., None]
        region = canvas[y : y + digit_size, x : x + digit_size]
        region[:] = region * (1.0 - ink) + rng.uniform(0.0, 90.0, size=3) * ink  # dark colour
        objects.append((digit + 1, ink_box(ink[..., 0], x, y)))  # category id
    canvas += params["noise_std"] * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas, 0, 255).round().astype(np.uint8), objects, not_placed


def _write_dataset(directory: Path, params: dict) -> None:
    """Draw all canvases into `directory`/images and write the three COCO files."""
    digits = load_digits()
    digit_images = digits.images / 16.0
    train_sources, val_sources = digit_source_split(digits.target)

    labeled = class_probabilities(params["tail_ratio"])
    unlabeled = shifted_class_probabilities(labeled, params.get("unlabeled_class_prior"))

    def draw(
        sources: list[np.ndarray], probabilities: np.ndarray
    ) -> Callable[[np.random.Generator], DrawnCanvas]:
        return lambda rng: _draw_canvas(rng, digit_images, sources, params, probabilities)

    # Val follows the labeled prior: the val metrics stay those of the unshifted dataset.
    splits = [
        SplitSpec("labeled", params["num_labeled"], draw(train_sources, labeled)),
        SplitSpec("unlabeled", params["num_unlabeled"], draw(train_sources, unlabeled)),
        SplitSpec("val", params["num_val"], draw(val_sources, labeled)),
    ]
    write_coco_splits(directory, "digits", params, _CATEGORIES, splits)


def _check_params(params: dict) -> None:
    if not 1 <= params["min_digits"] <= params["max_digits"]:
        raise ValueError(f"need 1 <= min_digits <= max_digits: {params}")
    if not 1 <= params["min_digit_size"] <= params["max_digit_size"] <= params["image_size"]:
        raise ValueError(f"need 1 <= min_digit_size <= max_digit_size <= image_size: {params}")
    if min(params["num_labeled"], params["num_val"]) < 1 or params["num_unlabeled"] < 0:
        raise ValueError(f"need num_labeled, num_val >= 1 and num_unlabeled >= 0: {params}")
    if params["tail_ratio"] <= 0 or params["noise_std"] < 0:
        raise ValueError(f"need tail_ratio > 0 and noise_std >= 0: {params}")


def generate_digits(
    root: str | os.PathLike,
    num_labeled: int = 50,
    num_unlabeled: int = 1000,
    num_val: int = 300,
    image_size: int = 128,
    min_digits: int = 2,
    max_digits: int = 6,
    min_digit_size: int = 16,
    max_digit_size: int = 40,
    tail_ratio: float = 10.0,
    noise_std: float = 8.0,
    seed: int = 0,
    unlabeled_class_prior: str | None = None,
) -> CocoSplits:
    """Generate (once) and return the digits dataset under `root/<hash of the parameters>/`.

    Writes `images/*.png`, `labeled.json`, `unlabeled.json` (annotations kept, for statistics
    only) and `val.json`. Deterministic in the parameters; generated in a temporary folder
    and published with an atomic rename, so concurrent callers and later calls reuse it.
    `noise_std` is in 0..255 intensity units. `unlabeled_class_prior` ("reversed", "uniform";
    `labelmatch.data.embedded.shifted_class_probabilities`) draws the unlabeled canvases' digits
    from another class prior than the labeled and val ones (a folder of its own).
    """
    params: dict[str, Any] = {
        "num_labeled": num_labeled,
        "num_unlabeled": num_unlabeled,
        "num_val": num_val,
        "image_size": image_size,
        "min_digits": min_digits,
        "max_digits": max_digits,
        "min_digit_size": min_digit_size,
        "max_digit_size": max_digit_size,
        "tail_ratio": float(tail_ratio),
        "noise_std": float(noise_std),
        "seed": seed,
        "version": _GENERATOR_VERSION,
    }
    _check_params(params)
    params = with_unlabeled_prior(params, unlabeled_class_prior)
    directory = cached_dataset(root, params, lambda folder: _write_dataset(folder, params))
    return CocoSplits(
        image_dir=directory / "images",
        labeled_json=directory / "labeled.json",
        unlabeled_json=directory / "unlabeled.json",
        val_json=directory / "val.json",
    )


@dataclass
class DigitsSplits:
    """The digits dataset's parameters (as `generate_digits`); generates only on `resolve()`,
    so that a config can hold it without generating anything at construction."""

    root: str | os.PathLike
    num_labeled: int = 50
    num_unlabeled: int = 1000
    num_val: int = 300
    image_size: int = 128
    min_digits: int = 2
    max_digits: int = 6
    min_digit_size: int = 16
    max_digit_size: int = 40
    tail_ratio: float = 10.0
    noise_std: float = 8.0
    seed: int = 0
    unlabeled_class_prior: str | None = None
    # A calibration split for the estimated prior (`CocoSplits.calibration_json`): the labeled
    # canvases of the same generator at `calibration_seed`, so drawn like the labeled ones from
    # the same glyph pool and read by no training step; 0: none.
    num_calibration: int = 0
    calibration_seed: int = 1

    def resolve(self) -> CocoSplits:
        params = dataclasses.asdict(self)
        num_calibration, calibration_seed = (
            params.pop("num_calibration"),
            params.pop("calibration_seed"),
        )
        splits = generate_digits(**params)
        if num_calibration <= 0:
            return splits
        if calibration_seed == self.seed:
            raise ValueError(
                f"calibration_seed must differ from seed ({self.seed}): the same seed draws the "
                "labeled canvases again"
            )
        calibration = generate_digits(
            **{
                **params,
                "num_labeled": num_calibration,
                "num_unlabeled": 0,
                "num_val": 1,
                "seed": calibration_seed,
                "unlabeled_class_prior": None,
            }
        )
        return dataclasses.replace(
            splits,
            calibration_json=calibration.labeled_json,
            calibration_image_dir=calibration.image_dir,
        )


@dataclass
class DigitsFoldSplits:
    """The CPU analogue of COCO-standard: `num_train` train canvases, of which `percent` % are
    labeled, drawn by the COCO-standard fold sampler (`labelmatch.data.split_files.folds`, fold
    `fold`), the rest unlabeled; `num_val` val canvases.

    The canvases are generated once as one pool (`generate_digits` with every train canvas in
    its labeled.json); the fold files go to `semi_supervised/train.{fold}@{percent}.json` and
    `...-unlabeled.json` beside it, with their sidecar.
    """

    root: str | os.PathLike
    num_train: int = 1000
    percent: float = 10
    fold: int = 1
    num_val: int = 300
    image_size: int = 128
    tail_ratio: float = 10.0
    seed: int = 0

    def resolve(self) -> CocoSplits:
        pool = generate_digits(
            self.root,
            num_labeled=self.num_train,
            num_unlabeled=0,
            num_val=self.num_val,
            image_size=self.image_size,
            tail_ratio=self.tail_ratio,
            seed=self.seed,
        )
        return fold_splits(
            pool.image_dir, pool.labeled_json, pool.val_json, self.fold, self.percent
        )
