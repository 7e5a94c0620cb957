"""The embedded `glyphs` dataset: letters and digits of 21 TrueType faces on cluttered canvases,
made to show the semi-supervised regime LabelMatch is about.

No download: the fonts are the ones matplotlib ships (`labelmatch.data.fonts`). A canvas has
2-8 glyphs (10-48 px tall, rotated by up to ±20°, each its own dark colour; a third of the
canvases are inverted to light-on-dark) over a two-colour gradient with soft blotches, thin
low-contrast lines and arcs across the whole canvas, distractor strokes in glyph colours
(squiggles, arcs, specks: ink that is no class) and Gaussian sensor noise. Glyphs and
distractors never overlap; a glyph's box is the tight box of its ink.

37 classes (category ids 1..37 in `CHARACTERS` order): the digits, the capitals and the
lowercase "l". The class prior is Zipf-like over the frequency ranks of `FREQUENCY_ORDER`:
P(rank r) ∝ r^-s with s = ln(tail_ratio) / ln(37), so the most frequent class is `tail_ratio`
times the least frequent. The visually confusable groups (`CONFUSABLE_GROUPS`: O/0/Q/D,
1/I/l, S/5, B/8, Z/2, G/6) each have a member near the head and one near the tail, so the
teacher's mistakes on rare classes are mostly the frequent look-alike, as with COCO's tail.
In the sans-serif faces I and l are nearly the same bar: some confusion is irreducible.

Sizes are chosen for `model=frcnn_tiny`, whose anchors are 12-68 px (`TINY_ANCHOR_SIZES`): at
the data config's 0.8-1.2x training scales a glyph is 8-58 px tall. The smallest ones (a
10 px 1, I or l is 3-10 px wide) reach the RPN's IoU threshold with no anchor and are learned
only through their best-matching anchor, like COCO's tiny objects.

The train pool and the val canvases come from the same faces (independent random streams).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
from labelmatch.data.fonts import font_digests, render_bank, renderer_version

# Bump when the drawing changes, so that cached datasets of an older drawing are not reused.
_GENERATOR_VERSION = 1

CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZl"
# Most frequent first. Each confusable group spans the ranks: O 1st, 0 10th, D 23rd, Q last.
FREQUENCY_ORDER = "O1S286AET0RNHC4I3LPM7UD9KYFWVXJGBZ5lQ"
CONFUSABLE_GROUPS = ("O0QD", "1Il", "S5", "B8", "Z2", "G6")
CATEGORIES = [{"id": k + 1, "name": c, "supercategory": "glyph"} for k, c in enumerate(CHARACTERS)]

# Downscaled ink opacity below this is dropped: the faint anti-aliased fringe would otherwise
# widen the box by a pixel nobody sees, and every kept pixel visibly changes the canvas.
_INK_THRESHOLD = 0.25
# Light-scheme grey levels (0..255); a dark canvas is the inverted light one.
_BACKGROUND_GREY = (165.0, 240.0)
_CLUTTER_GREY = (125.0, 150.0)  # lines across the canvas: half the glyphs' contrast
_INK_GREY = (0.0, 80.0)  # glyphs and distractors
_TINT = 20.0  # per-channel colour offset around a grey level
_BLOTCH_AMPLITUDE = 12.0
_COARSE_GRID = 5  # points per side of the background's coarse grid
_DISTRACTOR_SIZE = (10, 36)


def class_probabilities(tail_ratio: float) -> np.ndarray:
    """P(category id k + 1) for k = 0..36: the Zipf prior over `FREQUENCY_ORDER`'s ranks. [37]"""
    exponent = np.log(tail_ratio) / np.log(len(CHARACTERS))
    by_rank = np.arange(1, len(CHARACTERS) + 1, dtype=np.float64) ** -exponent
    ranks = [FREQUENCY_ORDER.index(c) for c in CHARACTERS]
    weights = by_rank[ranks]
    return weights / weights.sum()


@dataclass(frozen=True)
class PastedGlyph:
    """A glyph ready to paste: `opacity` [h, w] in 0..1 fills its box (ink on every edge)."""

    category_id: int
    opacity: np.ndarray
    colour: np.ndarray  # [3], light-scheme 0..255
    x: int
    y: int

    @property
    def box(self) -> list[int]:
        return ink_box(self.opacity, self.x, self.y)


@dataclass(frozen=True)
class Scene:
    """Everything a canvas is made of; `render` composes it. Kept apart from the drawing so that
    a test can render the same scene without its glyphs and see exactly their ink."""

    background: np.ndarray  # float32 [S, S, 3]: gradient, blotches, lines, distractors
    glyphs: list[PastedGlyph]
    inverted: bool  # light-on-dark: the composed canvas is inverted before the noise
    noise: np.ndarray  # float32 [S, S, 1], sensor noise in 0..255 units
    not_placed: int


def render(scene: Scene, with_glyphs: bool = True) -> np.ndarray:
    """The canvas of `scene`, uint8 [S, S, 3]."""
    canvas = scene.background.copy()
    for glyph in scene.glyphs if with_glyphs else []:
        height, width = glyph.opacity.shape
        region = canvas[glyph.y : glyph.y + height, glyph.x : glyph.x + width]
        opacity = glyph.opacity[..., None]
        region[:] = region * (1.0 - opacity) + glyph.colour * opacity
    if scene.inverted:
        canvas = 255.0 - canvas
    return np.clip(canvas + scene.noise, 0, 255).round().astype(np.uint8)


def _colour(rng: np.random.Generator, grey: tuple[float, float]) -> np.ndarray:
    return (rng.uniform(*grey) + rng.uniform(-_TINT, _TINT, size=3)).astype(np.float32)


def glyph_opacity(mask: Image.Image, height: int, angle: float) -> np.ndarray:
    """A pre-rendered "L" `mask` rotated by `angle` degrees, downscaled to `height` px of ink,
    as opacity [h, w] in 0..1 cropped to the ink (h is `height`, rarely a pixel or two less)."""
    rotated = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    rotated = rotated.crop(rotated.getbbox())
    width = max(1, round(rotated.width * height / rotated.height))
    # BOX averages every source pixel: the right anti-aliasing for a downscale.
    small = np.asarray(rotated.resize((width, height), Image.Resampling.BOX), np.float32) / 255
    # A hairline glyph at 10 px may peak below the threshold; its brightest half stays ink.
    opacity = np.where(small >= min(_INK_THRESHOLD, small.max() / 2), small, 0.0)
    x, y, w, h = ink_box(opacity, 0, 0)
    return opacity[y : y + h, x : x + w]


def _distractor_ink(rng: np.random.Generator, size: int) -> np.ndarray:
    """Opacity [size, size] of one stroke that is no glyph: a squiggle, an arc or specks."""
    mask = Image.new("L", (size, size))
    draw = ImageDraw.Draw(mask)
    width = max(1, round(size * rng.uniform(0.05, 0.1)))
    kind = rng.integers(3)
    if kind == 0:  # a low wave of 2-3 periods, turned about the centre: "~", never S, Z or N
        t = np.linspace(0.0, 1.0, 32)
        along = (t - 0.5) * (size - 2 * width)
        phase = 2 * np.pi * rng.uniform(2.0, 3.0) * t + rng.uniform(0, 2 * np.pi)
        across = 0.08 * size * np.sin(phase)
        turn = rng.uniform(0, np.pi)
        xs = size / 2 + along * math.cos(turn) - across * math.sin(turn)
        ys = size / 2 + along * math.sin(turn) + across * math.cos(turn)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=255, width=width)
    elif kind == 1:  # at most 140 degrees: no closed letter shape (C, O, U)
        start = rng.uniform(0, 360)
        draw.arc((0, 0, size - 1, size - 1), start, start + rng.uniform(60, 140), 255, width)
    else:
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = rng.uniform(2, size - 3, size=2)
            r = rng.uniform(1.0, 2.5)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    return np.asarray(mask, np.float32) / 255


def _background(rng: np.random.Generator, size: int, params: dict) -> np.ndarray:
    """Two-colour linear gradient, soft blotches, thin lines and wide arcs across. [S, S, 3]"""
    start, end = _colour(rng, _BACKGROUND_GREY), _colour(rng, _BACKGROUND_GREY)
    direction = rng.uniform(0, 2 * math.pi)
    # Gradient and blotches on a coarse grid, upscaled bilinearly: a linear gradient stays
    # exact, and it costs a fraction of computing every pixel.
    grid = np.linspace(0.0, 1.0, _COARSE_GRID, dtype=np.float32)
    along = grid[None, :] * math.cos(direction) + grid[:, None] * math.sin(direction)
    t = ((along - along.min()) / (along.max() - along.min()))[..., None]
    blotches = rng.uniform(-_BLOTCH_AMPLITUDE, _BLOTCH_AMPLITUDE, size=t.shape).astype(np.float32)
    coarse = start + (end - start) * t + blotches
    upscale = [
        Image.fromarray(coarse[..., c], mode="F").resize((size, size), Image.Resampling.BILINEAR)
        for c in range(3)
    ]
    canvas = np.stack([np.asarray(channel) for channel in upscale], axis=-1)
    lines = Image.new("L", (size, size))
    draw = ImageDraw.Draw(lines)
    for _ in range(int(rng.integers(0, params["max_clutter_lines"] + 1))):
        if rng.random() < 0.5:  # a straight line from border to border
            ends = rng.uniform(0, size, size=4).tolist()
            draw.line(ends, fill=255, width=1)
        else:  # radius at least a quarter of the canvas: never a glyph-sized ring
            cx, cy = rng.uniform(0, size, size=2).tolist()
            r = rng.uniform(size / 4, size)
            first = rng.uniform(0, 360)
            draw.arc((cx - r, cy - r, cx + r, cy + r), first, first + rng.uniform(60, 180), 255)
    colour = _colour(rng, _CLUTTER_GREY)
    rows, cols = np.nonzero(np.asarray(lines))  # a few hundred pixels: blend only those
    opacity = np.asarray(lines)[rows, cols, None].astype(np.float32) / 255
    canvas[rows, cols] = canvas[rows, cols] * (1.0 - opacity) + colour * opacity
    return canvas


def draw_scene(
    rng: np.random.Generator,
    bank: list[dict[str, Image.Image]],
    params: dict,
    probabilities: np.ndarray | None = None,
) -> Scene:
    """One canvas's scene: glyphs placed first, then distractors in the space left. Classes
    are drawn from `probabilities` [37] (default: the Zipf prior of `params["tail_ratio"]`)."""
    size = params["image_size"]
    if probabilities is None:
        probabilities = class_probabilities(params["tail_ratio"])
    log_heights = np.log([params["min_glyph_height"], params["max_glyph_height"] + 1])
    taken: list[tuple[int, int, int]] = []
    glyphs: list[PastedGlyph] = []
    not_placed = 0
    for _ in range(int(rng.integers(params["min_glyphs"], params["max_glyphs"] + 1))):
        k = int(rng.choice(len(CHARACTERS), p=probabilities))
        mask = bank[int(rng.integers(len(bank)))][CHARACTERS[k]]
        # Log-uniform heights: as many glyphs of 10-20 px as of 20-40 px, small objects abound.
        height = min(int(np.exp(rng.uniform(*log_heights))), params["max_glyph_height"])
        angle = rng.uniform(-params["max_rotation"], params["max_rotation"])
        opacity = glyph_opacity(mask, height, angle)
        side = max(opacity.shape)
        spot = free_spot(rng, size, side, taken)
        if spot is None:
            not_placed += 1
            continue
        taken.append((*spot, side))
        x = spot[0] + (side - opacity.shape[1]) // 2  # centred in its square
        y = spot[1] + (side - opacity.shape[0]) // 2
        glyphs.append(PastedGlyph(k + 1, opacity, _colour(rng, _INK_GREY), x, y))
    background = _background(rng, size, params)
    for _ in range(int(rng.integers(0, params["max_distractors"] + 1))):
        side = int(rng.integers(_DISTRACTOR_SIZE[0], _DISTRACTOR_SIZE[1] + 1))
        spot = free_spot(rng, size, side, taken)
        if spot is None:
            continue
        taken.append((*spot, side))
        x, y = spot
        ink = _distractor_ink(rng, side)[..., None]
        region = background[y : y + side, x : x + side]
        region[:] = region * (1.0 - ink) + _colour(rng, _INK_GREY) * ink
    inverted = bool(rng.random() < params["inverted_fraction"])
    # Grey (luminance) noise: a third of the draws of per-channel noise, and looks the same.
    noise = params["noise_std"] * rng.standard_normal((size, size, 1), dtype=np.float32)
    return Scene(background, glyphs, inverted, noise, not_placed)


def _draw_canvas(
    rng: np.random.Generator, bank: list, params: dict, probabilities: np.ndarray
) -> DrawnCanvas:
    scene = draw_scene(rng, bank, params, probabilities)
    objects = [(glyph.category_id, glyph.box) for glyph in scene.glyphs]
    return render(scene), objects, scene.not_placed


def _write_dataset(directory: Path, params: dict) -> None:
    bank = render_bank(CHARACTERS)
    labeled = class_probabilities(params["tail_ratio"])

    def draw(probabilities: np.ndarray) -> Callable[[np.random.Generator], DrawnCanvas]:
        return lambda rng: _draw_canvas(rng, bank, params, probabilities)

    splits = [
        SplitSpec("train", params["num_train"], draw(labeled)),
        SplitSpec("val", params["num_val"], draw(labeled)),
    ]
    shift = params.get("unlabeled_class_prior")
    if shift is not None:  # random stream 2: the train and val canvases stay the unshifted ones
        unlabeled = shifted_class_probabilities(labeled, shift)
        splits.append(SplitSpec("unlabeled", params["num_train"], draw(unlabeled)))
    write_coco_splits(directory, "glyphs", params, CATEGORIES, splits, image_suffix=".jpg")


def _check_params(params: dict) -> None:
    if not 1 <= params["min_glyphs"] <= params["max_glyphs"]:
        raise ValueError(f"need 1 <= min_glyphs <= max_glyphs: {params}")
    if not 4 <= params["min_glyph_height"] <= params["max_glyph_height"] <= params["image_size"]:
        raise ValueError(f"need 4 <= min_glyph_height <= max_glyph_height <= image_size: {params}")
    if min(params["num_train"], params["num_val"]) < 1:
        raise ValueError(f"need num_train, num_val >= 1: {params}")
    if params["tail_ratio"] < 1 or params["noise_std"] < 0 or params["max_distractors"] < 0:
        raise ValueError(f"need tail_ratio >= 1, noise_std >= 0, max_distractors >= 0: {params}")


def generate_glyphs(
    root: str | os.PathLike,
    num_train: int = 8000,
    num_val: int = 500,
    image_size: int = 160,
    min_glyphs: int = 2,
    max_glyphs: int = 8,
    min_glyph_height: int = 10,
    max_glyph_height: int = 48,
    max_rotation: float = 20.0,
    tail_ratio: float = 80.0,
    max_distractors: int = 4,
    max_clutter_lines: int = 3,
    inverted_fraction: float = 0.3,
    noise_std: float = 6.0,
    seed: int = 0,
    unlabeled_class_prior: str | None = None,
) -> Path:
    """Generate (once) the glyphs train pool and val canvases under `root/<parameter hash>/`
    and return that folder: `images/*.jpg`, `train.json` (`num_train` canvases, all annotated)
    and `val.json`. Deterministic in the parameters, the font files and the FreeType and Pillow
    versions, which are all in the hash. Angles are in degrees, `noise_std` in 0..255 units.
    `unlabeled_class_prior` ("reversed", "uniform"; `embedded.shifted_class_probabilities`)
    adds `unlabeled.json`: `num_train` more canvases whose glyphs follow that prior instead.
    """
    params: dict[str, Any] = {
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "min_glyphs": min_glyphs,
        "max_glyphs": max_glyphs,
        "min_glyph_height": min_glyph_height,
        "max_glyph_height": max_glyph_height,
        "max_rotation": float(max_rotation),
        "tail_ratio": float(tail_ratio),
        "max_distractors": max_distractors,
        "max_clutter_lines": max_clutter_lines,
        "inverted_fraction": float(inverted_fraction),
        "noise_std": float(noise_std),
        "seed": seed,
        "fonts": font_digests(),
        "renderer": renderer_version(),
        "version": _GENERATOR_VERSION,
    }
    _check_params(params)
    params = with_unlabeled_prior(params, unlabeled_class_prior)
    return cached_dataset(root, params, lambda folder: _write_dataset(folder, params))


@dataclass
class GlyphsSplits:
    """The glyphs as a COCO-standard analogue: `percent` % of the `num_train` pool labeled by
    the COCO-standard fold sampler (fold `fold`), the rest unlabeled (annotations kept, for
    statistics only), the val canvases for validation. Generates only on `resolve()`.

    With `unlabeled_class_prior` the unlabeled set is instead the pool's `unlabeled.json`:
    `num_train` other canvases drawn from that shifted prior (the labeled fold is the same)."""

    root: str | os.PathLike
    num_train: int = 8000
    percent: float = 10
    fold: int = 1
    num_val: int = 500
    image_size: int = 160
    tail_ratio: float = 80.0
    seed: int = 0
    unlabeled_class_prior: str | None = None
    # A calibration split for the estimated prior (`CocoSplits.calibration_json`): a pool of
    # this many canvases of the same generator at `calibration_seed`, all annotated. The fold
    # sampler draws the labeled canvases uniformly from the pool, so these follow the labeled
    # prior, and no training step reads them; 0: none.
    num_calibration: int = 0
    calibration_seed: int = 1

    def resolve(self) -> CocoSplits:
        pool_params = dataclasses.asdict(self)
        percent, fold = pool_params.pop("percent"), pool_params.pop("fold")
        num_calibration = pool_params.pop("num_calibration")
        calibration_seed = pool_params.pop("calibration_seed")
        directory = generate_glyphs(**pool_params)
        splits = fold_splits(
            directory / "images", directory / "train.json", directory / "val.json", fold, percent
        )
        if self.unlabeled_class_prior is not None:
            splits = dataclasses.replace(splits, unlabeled_json=directory / "unlabeled.json")
        if num_calibration <= 0:
            return splits
        if calibration_seed == self.seed:
            raise ValueError(
                f"calibration_seed must differ from seed ({self.seed}): the same seed draws the "
                "pool's canvases again"
            )
        calibration = generate_glyphs(
            **{
                **pool_params,
                "num_train": num_calibration,
                "num_val": 1,
                "seed": calibration_seed,
                "unlabeled_class_prior": None,
            }
        )
        return dataclasses.replace(
            splits,
            calibration_json=calibration / "train.json",
            calibration_image_dir=calibration / "images",
        )
