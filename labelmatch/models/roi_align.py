"""torchvision's multi-level RoIAlign with a shortcut for boxes that all map to one level.

torchvision's ``MultiScaleRoIAlign`` pools each FPN level's boxes into a zero-filled buffer of
every box's output ([K, C, 7, 7]) and scatters them back in box order. When every box maps to
one level, that buffer and scatter copy the single ``roi_align`` result once more for nothing.
That is the usual case for ``build_frcnn_tiny``: its 16-40 px boxes all map to the stride-4
level (the FPN paper's mapping, ``4 + log2(sqrt(area) / 224)`` clamped to the finest level,
puts a box there up to 112 px). There the buffer, fresh memory of 25 MiB per 16-image batch,
was 17 % of the teacher's inference time on a 2-core CPU (docs/benchmarks.md).
"""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


class OneLevelShortcutRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` (same arguments, same output) that pools straight from the level
    when all boxes map to one; otherwise torchvision's own multi-level path runs.

    Input: feature maps by name ([B, C, H_l, W_l]), boxes per image ([N_i, 4], image frame),
    image sizes; output [sum N_i, C, *output_size], rows in box order.
    """

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        levels = self.map_levels(boxes)
        if len(levels) == 0 or not bool((levels == levels[0]).all()):
            return super().forward(x, boxes, image_shapes)
        level = int(levels[0])
        return roi_align(
            features[level],
            _convert_to_roi_format(boxes),
            output_size=self.output_size,
            spatial_scale=self.scales[level],
            sampling_ratio=self.sampling_ratio,
        ).to(features[0].dtype)  # torchvision's result has the first level's dtype (autocast)
