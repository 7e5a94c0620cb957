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
    returns [N, 4] XYXY.

    All four corners are transformed and the min/max taken, so flips (which swap x1 and x2)
    and any other affine map give a proper XYXY box.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack(
        [
            torch.stack([x1, y1], -1),
            torch.stack([x2, y1], -1),
            torch.stack([x1, y2], -1),
            torch.stack([x2, y2], -1),
        ],
        dim=-2,
    )  # [N, 4 corners, 2]
    matrix = matrix.to(boxes)
    if matrix.ndim == 3:  # per box: [N, 4, 2] @ [N, 2, 2] + [N, 1, 2]
        mapped = corners @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]
    else:
        mapped = corners @ matrix[:2, :2].T + matrix[:2, 2]
    return torch.cat([mapped.amin(dim=-2), mapped.amax(dim=-2)], dim=-1)


def stacked(matrices: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, 3, 3] from one such tensor or from B matrices [3, 3]."""
    return matrices if isinstance(matrices, torch.Tensor) else torch.stack(list(matrices))


def weak_to_strong(weak_matrix: torch.Tensor, strong_matrix: torch.Tensor) -> torch.Tensor:
    """The [3, 3] matrix taking weak-view coordinates to strong-view coordinates.

    Both matrices start from the original image, so weak -> original -> strong is
    `strong @ inverse(weak)`. The inverse is taken in float64 to keep sub-pixel exactness.
    """
    inverse_weak = torch.linalg.inv(weak_matrix.double())
    return (strong_matrix.double() @ inverse_weak).to(strong_matrix.dtype)
