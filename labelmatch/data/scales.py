"""View sizes that fit a dataset's own images (`data=coco` with its scale keys left null).

The paper's sizes (short side 800, long side 1333, docs/method.md §5) are for COCO's ~640 x 480
photos and the R50-FPN. A custom dataset of 128-px images resized to them is upscaled about 6x:
training, validation and every ACT refresh then run on images six times larger in each side for
no information. Here the sizes follow the images instead, with the digits' proportions (their
128-px canvases train at short sides 96-160, label at 112-144 and test at 128):

    S = the median short side of the labeled images, capped at 800 (never above the paper's);
    train and strong views: short side drawn from S x {0.75, 0.875, 1, 1.125, 1.25};
    weak view: S x {0.875, 1, 1.125}; test (validation, ACT reference): S;
    long side at most S x 1333 / 800 (the paper's aspect cap), at least the longest view drawn;
    with short sides given by hand (`data.train_scales=[...]`, `data.test_scale=...`) and the
    long side left null, at least the largest given x 1333 / 800, so that none is capped.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labelmatch.data.coco import is_positive_integer
from labelmatch.data.errors import DataError

logger = logging.getLogger(__name__)

PAPER_TEST_SCALE, PAPER_MAX_SIZE = 800, 1333
TRAIN_FACTORS = (0.75, 0.875, 1.0, 1.125, 1.25)
WEAK_FACTORS = (0.875, 1.0, 1.125)


@dataclass(frozen=True)
class DatasetScales:
    """Short sides in pixels (each view draws one; long side <= max_size)."""

    train_scales: tuple[int, ...]
    weak_scales: tuple[int, ...]
    strong_scales: tuple[int, ...]
    test_scale: int
    max_size: int


def scales_for_images(sizes: Iterable[tuple[int, int]]) -> DatasetScales:
    """Sizes for images of `sizes` ((width, height) pairs, at least one), as the module says."""
    short_sides = [min(w, h) for w, h in sizes]
    if not short_sides or min(short_sides) <= 0:
        raise ValueError("need at least one image with positive width and height")
    short = min(round(statistics.median(short_sides)), PAPER_TEST_SCALE)
    train = tuple(sorted({max(1, round(short * f)) for f in TRAIN_FACTORS}))
    weak = tuple(sorted({max(1, round(short * f)) for f in WEAK_FACTORS}))
    max_size = max(round(short * PAPER_MAX_SIZE / PAPER_TEST_SCALE), max(train))
    return DatasetScales(train, weak, train, short, max_size)


SHORT_SIDE_KEYS = ("train_scales", "weak_scales", "strong_scales", "test_scale")
SCALE_KEYS = (*SHORT_SIDE_KEYS, "max_size")


def resolve_scales(keys: dict, images: list[dict], source: str) -> dict:
    """`keys` (a data config's loader keys) with every null scale key filled from the images of
    `source` (COCO image records with `width`, `height`; records without a valid size are left
    to the dataset's own validation); keys given a value win, absent keys stay absent. Logs the
    resolved choices."""
    missing = [name for name in SCALE_KEYS if name in keys and keys[name] is None]
    if not missing:
        return keys
    sizes = [
        (int(image["width"]), int(image["height"]))
        for image in images
        if isinstance(image, dict)
        and all(is_positive_integer(image.get(k)) for k in ("width", "height"))
    ]
    if not sizes:
        raise DataError(
            f"{source}: no image record with a positive integer width and height, so no view "
            f"size can be derived from it; set {', '.join(f'data.{m}' for m in missing)}"
        )
    derived = scales_for_images(sizes)
    resolved = {**keys, **{name: getattr(derived, name) for name in missing}}
    if "max_size" in missing:  # at least the paper's aspect cap of the largest short side given
        given = [side for name in SHORT_SIDE_KEYS if name not in missing
                 for side in _short_sides(keys.get(name))]  # fmt: skip
        if given:
            cap = round(max(given) * PAPER_MAX_SIZE / PAPER_TEST_SCALE)
            resolved["max_size"] = max(derived.max_size, cap)
    logger.info(
        "view sizes from %s (median short side %d px of %d images): train/strong short sides %s, "
        "weak %s, test %d, long side <= %d (%s derived; set data.<key> to choose)",
        source, statistics.median(min(s) for s in sizes), len(sizes),
        _shown(resolved["train_scales"]), _shown(resolved["weak_scales"]), resolved["test_scale"],
        resolved["max_size"], ", ".join(missing),
    )  # fmt: skip
    return resolved


def _short_sides(scales: object) -> list[int]:
    """The short sides a given scale key names: one, a list of them, or none for a resize rule
    (which sizes its views itself) or an absent key."""
    if is_positive_integer(scales):
        return [int(scales)]
    if isinstance(scales, Sequence) and not isinstance(scales, str):
        return [int(side) for side in scales if is_positive_integer(side)]
    return []


def _shown(scales: object) -> object:
    """A `*_scales` value as the log line shows it: a list of short sides as a list; one short
    side or a resize rule as it is (both are allowed beside derived keys)."""
    return list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else scales
