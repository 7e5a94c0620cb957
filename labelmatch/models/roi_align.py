"""torchvision's multi-level RoIAlign with MMDetection's pixel alignment and a one-level shortcut.

Alignment: torchvision's ``MultiScaleRoIAlign`` calls ``roi_align`` with ``aligned=False`` and no
way to change it. MMDetection 2.x's Faster R-CNN (the official detector, docs/method.md §7) pools
with mmcv's ``RoIAlign(output_size=7, sampling_ratio=0)``, whose default is ``aligned=True``: a
box's corners are shifted by half a feature cell (x · scale − 0.5) so that a sample point sits on
the pixel centre it means. Without it every pooled bin is half a cell (2 px at stride 4, 16 px at
stride 32) off. ``aligned`` is a constructor argument here.

Shortcut: torchvision pools each FPN level's boxes into a zero-filled buffer of every box's output
([K, C, 7, 7]) and scatters them back in box order. When every box maps to one level, that buffer
and scatter copy the single ``roi_align`` result once more for nothing. That is the usual case for
``build_frcnn_tiny``: its 16-40 px boxes all map to the stride-4 level (the FPN paper's mapping,
``4 + log2(sqrt(area) / 224)`` clamped to the finest level, puts a box there up to 112 px). There
the buffer, fresh memory of 25 MiB per 16-image batch, was 17 % of the teacher's inference time
on a 2-core CPU (docs/benchmarks.md).

The level mapping is torchvision's, which equals MMDetection's ``SingleRoIExtractor`` (finest
scale 56: ``floor(log2(sqrt(area) / 56))`` clamped to the levels).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


class OneLevelShortcutRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` (same arguments, plus ``aligned``) that pools straight from the level
    when all boxes map to one. With ``aligned=False`` its output equals torchvision's.

    Input: feature maps by name ([B, C, H_l, W_l]), boxes per image ([N_i, 4], image frame),
    image sizes; output [sum N_i, C, *output_size], rows in box order.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int] | list[int],
        sampling_ratio: int,
        *,
        aligned: bool = False,
        shortcut: bool = True,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__(
            featmap_names,
            output_size,
            sampling_ratio,
            canonical_scale=canonical_scale,
            canonical_level=canonical_level,
        )
        self.aligned = aligned
        # False: always the per-level loop (an exported graph must not freeze the branch its
        # example image takes; labelmatch.export).
        self.shortcut = shortcut

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        scales, map_levels = self.scales, self.map_levels
        if scales is None or map_levels is None:  # set just above; tells TorchScript so
            raise ValueError("the pooler's scales are not set")
        rois = _convert_to_roi_format(boxes)
        levels = map_levels(boxes)
        if self.shortcut and len(levels) > 0:
            # the lowest and highest level in one read from the device (a GPU waits once)
            bounds: list[int] = torch.stack([levels.min(), levels.max()]).tolist()
            low, high = bounds[0], bounds[1]
            if low == high:
                # torchvision's result has the first level's dtype (autocast)
                return self._pool(features[low], rois, scales[low]).to(features[0].dtype)
        # rois.shape[0], not len(rois): the ONNX tracer keeps a shape read but freezes len() to
        # the example image's count, and an image with another number of proposals then fails
        result = torch.zeros(
            (rois.shape[0], features[0].shape[1], self.output_size[0], self.output_size[1]),
            dtype=features[0].dtype,
            device=features[0].device,
        )
        for level, feature in enumerate(features):
            in_level = torch.where(levels == level)[0]
            pooled = self._pool(feature, rois[in_level], scales[level])
            result[in_level] = pooled.to(result.dtype)
        return result

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        """roi_align of rois [K, 5] (batch index, x1, y1, x2, y2) on one level [B, C, H, W]
        whose stride is 1 / `scale`."""
        return roi_align(
            feature,
            rois,
            output_size=self.output_size,
            spatial_scale=scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
