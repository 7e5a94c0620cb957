"""Training and test views of an image, each with its geometry matrix (method-spec §5).

Geometric ops (flip, resize) are decided here and applied with `transforms.v2.functional`, so
every view knows its exact original -> view matrix (`labelmatch.data.geometry`); boxes are
mapped with that matrix. Photometric ops touch the image only. Randomness comes from the
global torch RNG, which the training loaders seed per sample
(`labelmatch.data.samplers.SeededDraws`): a view is a pure function of its draw.

Input: `(image, target)` as returned by `CocoDetection`: uint8 image [3, H, W], target with
XYXY `boxes` [N, 4], `labels` [N], `image_id`. Output images are float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from labelmatch.data.geometry import flip_matrix, map_boxes, scale_matrix

# Official strong augmentation: kernel 9 covers +-2 sigma at the largest sigma (2.0); larger
# kernels cost a lot more on CPU (torchvision blurs with a dense 2-D kernel).
_BLUR_KERNEL_SIZE = 9


def resized_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side at `short_side`, the long side at most `max_size`, same ratio."""
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


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


def photometric_jitter(erase: bool) -> v2.Compose:
    """The official strong photometric pipeline; `erase=False` gives the labeled variant."""
    ops: list[torch.nn.Module] = [
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(_BLUR_KERNEL_SIZE, sigma=(0.1, 2.0))], p=0.5),
    ]
    if erase:
        ops += [
            v2.RandomErasing(p=0.7, scale=(0.05, 0.2), ratio=(0.3, 3.3), value="random"),
            v2.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.1, 6.0), value="random"),
            v2.RandomErasing(p=0.3, scale=(0.02, 0.2), ratio=(0.05, 8.0), value="random"),
        ]
    return v2.Compose(ops)


def _to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> plain float32 tensor in [0, 1]."""
    return F.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)


def _emitted(image: torch.Tensor) -> torch.Tensor:
    """Every view leaves the pipeline through here: float32 in [0, 1] on every CPU.

    Photometric ops can land a few ulp outside [0, 1] depending on the CPU's float kernels
    (colour jitter, blur), and RandomErasing's "random" fill is N(0, 1) noise; one clamp at
    the end of the pipeline bounds them all.
    """
    # Not in place: RandomGrayscale returns its one grey channel expanded to three (stride 0),
    # which an in-place clamp refuses when no later op copies the view (no blur, no erasing).
    return image.clamp(0.0, 1.0)


def _random_choice(values: Sequence[int]) -> int:
    return int(values[int(torch.randint(len(values), ()))])


def _check_scales(name: str, scales: Sequence[int], max_size: int) -> tuple[int, ...]:
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) <= 0 or max_size <= 0:
        raise ValueError(f"{name} must be non-empty positive sizes with max_size > 0: {scales}")
    return scales


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
    """Labeled image: random flip, random short side from `scales` (long side <= `max_size`),
    and photometric jitter without erasing (method-spec §5, labeled)."""

    def __init__(
        self, scales: Sequence[int], max_size: int, flip_prob: float = 0.5, photometric: bool = True
    ) -> None:
        self.scales = _check_scales("scales", scales, max_size)
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.jitter = photometric_jitter(erase=False) if photometric else None

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        height, width = image.shape[-2:]
        flip = bool(torch.rand(()) < self.flip_prob)
        size = resized_size(height, width, _random_choice(self.scales), self.max_size)
        view, matrix = flip_and_resize(image, flip, size)
        view = _to_float(view)
        if self.jitter is not None:
            view = self.jitter(view)
        return _emitted(view), _view_target(target, matrix)


class UnlabeledViews:
    """Unlabeled image: one shared flip, then a weak view (teacher) and a strong view (student),
    each at its own random short side; the strong view gets the strong photometric pipeline
    with three random-erasing passes (method-spec §5, unlabeled).

    Returns dict(weak [3, hw, ww], strong [3, hs, ws], weak_matrix [3, 3],
    strong_matrix [3, 3], target (ground truth, for statistics only: boxes in the ORIGINAL
    frame, weak_boxes the same boxes in the weak view's frame, labels, image_id), image_id).
    An image without annotations has empty boxes [0, 4].
    """

    def __init__(
        self,
        weak_scales: Sequence[int],
        strong_scales: Sequence[int],
        max_size: int,
        flip_prob: float = 0.5,
    ) -> None:
        self.weak_scales = _check_scales("weak_scales", weak_scales, max_size)
        self.strong_scales = _check_scales("strong_scales", strong_scales, max_size)
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.strong_jitter = photometric_jitter(erase=True)

    def __call__(self, image: torch.Tensor, target: dict) -> dict:
        height, width = image.shape[-2:]
        flip = bool(torch.rand(()) < self.flip_prob)  # shared by both views
        weak_size = resized_size(height, width, _random_choice(self.weak_scales), self.max_size)
        strong_size = resized_size(height, width, _random_choice(self.strong_scales), self.max_size)
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
