"""View geometry as 3x3 homogeneous matrices (docs/method.md §5).

A view's matrix maps ORIGINAL image coordinates (pixels, continuous, x right, y down) to that
view's coordinates, as MMDetection 3 records per view. Boxes move between the weak and the
strong view of an unlabeled image only through these matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def flip_matrix(width: float) -> torch.Tensor:
    """Horizontal flip of an image `width` pixels wide: x -> width - x. [3, 3] float32."""
    return torch.tensor(
        [[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32
    )


def scale_matrix(sx: float, sy: float) -> torch.Tensor:
    """Resize by `sx` horizontally and `sy` vertically: (x, y) -> (sx x, sy y). [3, 3] float32."""
    return torch.tensor(
        [[float(sx), 0.0, 0.0], [0.0, float(sy), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32
    )


def map_boxes(boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Map XYXY boxes [N, 4] through `matrix` [3, 3], or through one matrix per box [N, 3, 3];
    returns [N, 4] XYXY, in the boxes' dtype.

    All four corners are transformed and the min/max taken, so flips (which swap x1 and x2)
    and any other affine map give a proper XYXY box. x' = a x + b y + t_x is written out
    rather than a matrix product: both forms of `matrix` then give the same bits, and under
    autocast the coordinates keep the boxes' precision (a bf16 matrix product would round a
    coordinate near 1333 px to a multiple of 8).
    """
    matrix = matrix.to(boxes)
    if matrix.ndim == 2:
        matrix = matrix[None]  # one matrix for every box
    a, b, shift_x = (matrix[:, 0, k, None] for k in range(3))  # each [N or 1, 1]
    c, d, shift_y = (matrix[:, 1, k, None] for k in range(3))
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = torch.stack([x1, x2, x1, x2], dim=-1)  # the four corners, [N, 4]
    ys = torch.stack([y1, y1, y2, y2], dim=-1)
    mapped_x = a * xs + b * ys + shift_x
    mapped_y = c * xs + d * ys + shift_y
    return torch.stack(
        [
            mapped_x.amin(dim=-1),
            mapped_y.amin(dim=-1),
            mapped_x.amax(dim=-1),
            mapped_y.amax(dim=-1),
        ],
        dim=-1,
    )


def clip_boxes(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """XYXY boxes [N, 4] clipped to their own image, sizes [N, 2] (h, w) one per box: torchvision's
    `clip_boxes_to_image` with a size per box, so that many images' boxes clip at once."""
    height, width = sizes.to(boxes).unbind(1)
    clipped = boxes.clone()
    clipped[:, 0::2] = boxes[:, 0::2].clamp(min=0).minimum(width[:, None])
    clipped[:, 1::2] = boxes[:, 1::2].clamp(min=0).minimum(height[:, None])
    return clipped


def stacked(matrices: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, 3, 3] from one such tensor or from B matrices [3, 3]."""
    return matrices if isinstance(matrices, torch.Tensor) else torch.stack(list(matrices))


def weak_to_strong(weak_matrix: torch.Tensor, strong_matrix: torch.Tensor) -> torch.Tensor:
    """The [3, 3] matrix taking weak-view coordinates to strong-view coordinates (or [B, 3, 3]
    for B images' matrices at once).

    Both matrices start from the original image, so weak -> original -> strong is
    `strong @ inverse(weak)`. The inverse is taken in float64 to keep sub-pixel exactness.
    """
    # inv_ex: the matrices are invertible by construction, and inv's check of that would make
    # the host wait for a GPU.
    inverse_weak = torch.linalg.inv_ex(weak_matrix.double()).inverse
    return (strong_matrix.double() @ inverse_weak).to(strong_matrix.dtype)
