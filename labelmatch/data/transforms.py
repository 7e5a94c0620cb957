"""Training and test views of an image, each with its geometry matrix (docs/method.md §5).

Geometric ops (flip, resize) are decided here and applied with `transforms.v2.functional`, so
every view knows its exact original -> view matrix (`labelmatch.data.geometry`); boxes are
mapped with that matrix. Photometric ops touch the image only. Randomness comes from the
global torch RNG, which the training loaders seed per sample
(`labelmatch.data.samplers.SeededDraws`): a view is a pure function of its draw.

A view's size comes from a resize rule (`ShortSideChoice`, `ShortSideRange`, `LongSideRatio`),
each drawing the size of one view from the image's; the data configs build them with Hydra.

Input: `(image, target)` as returned by `CocoDetection`: uint8 image [3, H, W] (uint16 from a
16-bit PNG), target with XYXY `boxes` [N, 4], `labels` [N], `image_id`. Output images are
float32 in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from labelmatch.data.geometry import flip_matrix, map_boxes, scale_matrix

# The official strong pipeline blurs with albumentations' GaussianBlur at its default
# blur_limit (3, 7): k drawn uniformly from 3..7, an even k raised to the next odd size, so
# k = 3, 5, 7 with probabilities 1/5, 2/5, 2/5 (docs/method.md §5). A size listed twice is
# drawn twice as often.
BLUR_KERNEL_DRAWS = (3, 5, 5, 7, 7)


def _scaled(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def resized_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side at `short_side`, the long side at most `max_size`, same ratio."""
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return _scaled(height, width, scale)


class ResizeRule(Protocol):
    """Draws the (h, w) of one view of an image `height` x `width`, keeping its aspect ratio."""

    def draw(self, height: int, width: int) -> tuple[int, int]: ...


def _check_scales(name: str, scales: Sequence[int], max_size: int) -> tuple[int, ...]:
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) <= 0 or max_size <= 0:
        raise ValueError(f"{name} must be non-empty positive sizes with max_size > 0: {scales}")
    return scales


@dataclass(frozen=True)
class ShortSideChoice:
    """Short side drawn uniformly from `scales` (px), long side at most `max_size`.

    The rule of a data config's `*_scales` given as a list (the embedded digits).
    """

    scales: Sequence[int]
    max_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", _check_scales("scales", self.scales, self.max_size))

    def draw(self, height: int, width: int) -> tuple[int, int]:
        short_side = self.scales[int(torch.randint(len(self.scales), ()))]
        return resized_size(height, width, short_side, self.max_size)


@dataclass(frozen=True)
class ShortSideRange:
    """Short side an integer drawn uniformly from [low, high] (px), long side at most `max_size`.

    MMDetection's `Resize(img_scale=[(max_size, low), (max_size, high)], keep_ratio=True)`: the
    official weak view, short side 500-800, long side <= 1333 (docs/method.md §5).
    """

    low: int = 500
    high: int = 800
    max_size: int = 1333

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high or self.max_size <= 0:
            raise ValueError(f"need 0 < low <= high and max_size > 0: {self}")

    def draw(self, height: int, width: int) -> tuple[int, int]:
        short_side = int(torch.randint(self.low, self.high + 1, ()))
        return resized_size(height, width, short_side, self.max_size)


@dataclass(frozen=True)
class LongSideRatio:
    """Long side `base` x r (truncated to whole pixels), r ~ U(ratio_range), same ratio.

    MMDetection's `Resize(img_scale=(base, base), ratio_range=..., keep_ratio=True)`: the
    official labeled and strong views, base 1024 with r ~ U(0.2, 1.8) in the paper's table
    (`labelmatch_standard_paper.py`) and U(0.5, 1.5) in the 40k-step ablations
    (`labelmatch_standard.py`; docs/method.md §5). No cap: at r = 1.8 the long side is 1843.
    """

    base: int = 1024
    ratio_range: Sequence[float] = (0.2, 1.8)

    def __post_init__(self) -> None:
        low, high = (float(r) for r in self.ratio_range)
        if not 0 < low <= high or self.base <= 0:
            raise ValueError(f"need base > 0 and 0 < ratio_range[0] <= ratio_range[1]: {self}")
        object.__setattr__(self, "ratio_range", (low, high))

    def draw(self, height: int, width: int) -> tuple[int, int]:
        low, high = self.ratio_range
        long_side = int(self.base * (low + (high - low) * float(torch.rand(()))))
        return _scaled(height, width, max(1, long_side) / max(height, width))


# The official rules of the paper's table (docs/method.md §5): labeled and strong, weak view.
PAPER_RESIZE = LongSideRatio(1024, (0.2, 1.8))
PAPER_WEAK_RESIZE = ShortSideRange(500, 800, 1333)


def resize_rule(scales: ResizeRule | Sequence[int] | int, max_size: int) -> ResizeRule:
    """A data config's `*_scales` value as a rule: a rule as it is, a list of short sides (or
    one, `data.train_scales=800`) as `ShortSideChoice(scales, max_size)`."""
    if hasattr(scales, "draw"):
        return scales
    if isinstance(scales, int):
        scales = (scales,)
    return ShortSideChoice(tuple(scales), max_size)


def flip_and_resize(
    image: torch.Tensor, flip: bool, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optionally flip, then resize `image` [3, H, W] to `size` (h, w).

    Returns the view [3, h, w] and its original -> view matrix [3, 3].
    """
    height, width = image.shape[-2:]
    matrix = torch.eye(3)
    if flip:
        image = F.horizontal_flip(image)
        matrix = flip_matrix(width)
    image = F.resize(image, list(size), antialias=True)
    # The exact ratios of the pixel grid actually produced, not the requested scale.
    matrix = scale_matrix(size[1] / width, size[0] / height) @ matrix
    return image, matrix


class RandomKernelGaussianBlur(v2.GaussianBlur):
    """Gaussian blur with the kernel size drawn per image from `kernel_sizes` (uniformly over
    the list) and sigma ~ U(sigma), as albumentations' GaussianBlur draws both.

    The image is the first input. Along a side under 4 px (a very elongated image's view) the
    drawn size is cut to 2 * side - 1, the largest whose reflect padding torchvision accepts there
    (OpenCV, the official blur, reflects as often as needed; 1 px: no blur along it); the other
    side keeps the drawn size."""

    def __init__(self, kernel_sizes: Sequence[int], sigma: Sequence[float]) -> None:
        super().__init__(max(kernel_sizes), sigma)  # validates sigma and the largest size
        if any(k <= 0 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd and positive: {kernel_sizes}")
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        size = self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), ()))]
        _, height, width = F.get_dimensions(flat_inputs[0])
        kernel_size = [min(size, 2 * width - 1), min(size, 2 * height - 1)]  # (x, y)
        return dict(super().make_params(flat_inputs), kernel_size=kernel_size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.gaussian_blur, inpt, **params)


class UniformRandomErasing(v2.RandomErasing):
    """Random erasing as the official pipeline draws it (docs/method.md §5) on one image
    [C, H, W]: the aspect ratio h / w ~ U(ratio) (torchvision: log-uniform) and the fill
    uniform per pixel and channel over the 256 levels of an 8-bit image, k / 255 (official
    `np.random.randint(0, 256)` before normalisation; torchvision's "random" fill is N(0, 1)).
    Area ~ U(scale) x H x W; up to 10 tries for a rectangle inside the image, else no erasing.
    """

    def __init__(self, p: float, scale: Sequence[float], ratio: Sequence[float]) -> None:
        super().__init__(p=p, scale=scale, ratio=ratio)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        channels, height, width = F.get_dimensions(flat_inputs[0])
        for _ in range(10):
            area = height * width * float(torch.empty(()).uniform_(*self.scale))
            ratio = float(torch.empty(()).uniform_(*self.ratio))
            h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if h < height and w < width:
                fill = torch.randint(0, 256, (channels, h, w), dtype=torch.float32) / 255
                i = int(torch.randint(0, height - h + 1, ()))
                j = int(torch.randint(0, width - w + 1, ()))
                return dict(i=i, j=j, h=h, w=w, v=fill)
        return dict(i=0, j=0, h=height, w=width, v=None)  # v=None: the image stays as it is


def photometric_jitter(erase: bool) -> v2.Compose:
    """The official strong photometric pipeline (`AugmentationUT`); `erase=False` gives the
    labeled variant (docs/method.md §5)."""
    ops: list[torch.nn.Module] = [
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([RandomKernelGaussianBlur(BLUR_KERNEL_DRAWS, sigma=(0.1, 2.0))], p=0.5),
    ]
    if erase:
        ops += [
            UniformRandomErasing(p=0.7, scale=(0.05, 0.2), ratio=(0.3, 3.3)),
            UniformRandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.1, 6.0)),
            UniformRandomErasing(p=0.3, scale=(0.02, 0.2), ratio=(0.05, 8.0)),
        ]
    return v2.Compose(ops)


def _to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> plain float32 tensor in [0, 1]."""
    return F.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)


def _emitted(image: torch.Tensor) -> torch.Tensor:
    """Every view leaves the pipeline through here: float32 in [0, 1] on every CPU.

    Photometric ops can land a few ulp outside [0, 1] depending on the CPU's float kernels
    (colour jitter, blur); one clamp at the end of the pipeline bounds them all.
    """
    # Not in place: RandomGrayscale returns its one grey channel expanded to three (stride 0),
    # which an in-place clamp refuses when no later op copies the view (no blur, no erasing).
    return image.clamp(0.0, 1.0)


def _view_target(target: dict, matrix: torch.Tensor) -> dict:
    """Target in the view frame, plain tensors, with the view matrix and the original size."""
    boxes = target["boxes"]
    return {
        "boxes": map_boxes(boxes.as_subclass(torch.Tensor).float(), matrix),
        "labels": target["labels"],
        "image_id": target["image_id"],
        "matrix": matrix,
        "orig_size": tuple(boxes.canvas_size),
    }


class LabeledTransform:
    """Labeled image: random flip, a size drawn by `resize`, and photometric jitter without
    erasing (docs/method.md §5, labeled); `photometric=False` leaves the colours alone (the
    official supervised baseline, `configs/baseline/baseline_ssod.py`)."""

    def __init__(
        self, resize: ResizeRule, flip_prob: float = 0.5, photometric: bool = True
    ) -> None:
        self.resize = resize
        self.flip_prob = flip_prob
        self.jitter = photometric_jitter(erase=False) if photometric else None

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        height, width = image.shape[-2:]
        flip = bool(torch.rand(()) < self.flip_prob)
        view, matrix = flip_and_resize(image, flip, self.resize.draw(height, width))
        view = _to_float(view)
        if self.jitter is not None:
            view = self.jitter(view)
        return _emitted(view), _view_target(target, matrix)


class UnlabeledViews:
    """Unlabeled image: one shared flip, then a weak view (teacher) and a strong view (student),
    each at its own size drawn by `weak_resize` / `strong_resize`; the strong view gets the
    strong photometric pipeline with three random-erasing passes (docs/method.md §5, unlabeled).

    Returns dict(weak [3, hw, ww], strong [3, hs, ws], weak_matrix [3, 3],
    strong_matrix [3, 3], target (ground truth, for statistics only: boxes in the ORIGINAL
    frame, weak_boxes the same boxes in the weak view's frame, labels, image_id), image_id).
    An image without annotations has empty boxes [0, 4].
    """

    def __init__(
        self, weak_resize: ResizeRule, strong_resize: ResizeRule, flip_prob: float = 0.5
    ) -> None:
        self.weak_resize = weak_resize
        self.strong_resize = strong_resize
        self.flip_prob = flip_prob
        self.strong_jitter = photometric_jitter(erase=True)

    def __call__(self, image: torch.Tensor, target: dict) -> dict:
        height, width = image.shape[-2:]
        flip = bool(torch.rand(()) < self.flip_prob)  # shared by both views
        weak_size = self.weak_resize.draw(height, width)
        strong_size = self.strong_resize.draw(height, width)
        weak, weak_matrix = flip_and_resize(image, flip, weak_size)
        strong, strong_matrix = flip_and_resize(image, flip, strong_size)
        boxes = target["boxes"].as_subclass(torch.Tensor).float()
        return {
            "weak": _emitted(_to_float(weak)),
            "strong": _emitted(self.strong_jitter(_to_float(strong))),
            "weak_matrix": weak_matrix,
            "strong_matrix": strong_matrix,
            "target": {
                "boxes": boxes,
                "weak_boxes": map_boxes(boxes, weak_matrix),
                "labels": target["labels"],
                "image_id": target["image_id"],
            },
            "image_id": target["image_id"],
        }


class TestTransform:
    """Evaluation: deterministic resize to short side `scale` (long side <= `max_size`), no flip."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, scale: int, max_size: int) -> None:
        self.scale = _check_scales("scale", [scale], max_size)[0]
        self.max_size = max_size

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        height, width = image.shape[-2:]
        size = resized_size(height, width, self.scale, self.max_size)
        view, matrix = flip_and_resize(image, False, size)
        return _emitted(_to_float(view)), _view_target(target, matrix)
