"""The teacher's pass on the weak views: detections for pseudo-labelling plus the features that
proposal self-assignment reuses (so the teacher backbone runs once per step, not twice)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN


@dataclass
class TeacherOutput:
    """detections: per image dict(boxes [N,4], scores [N], labels [N]) in the weak frame;
    features: FPN maps of the batched weak views; image_sizes: (h, w) per weak view."""

    detections: list[dict[str, Tensor]]
    features: OrderedDict[str, Tensor]
    image_sizes: list[tuple[int, int]]


@torch.no_grad()
def teacher_forward(teacher: FasterRCNN, images: list[Tensor]) -> TeacherOutput:
    """torchvision's GeneralizedRCNN.forward in eval mode, keeping the features.

    The model's transform never resizes (PreResizedTransform), so detections are already in the
    frame of the images given.
    """
    batched, _ = teacher.transform(images)
    features = teacher.backbone(batched.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = teacher.rpn(batched, features)
    detections, _ = teacher.roi_heads(features, proposals, batched.image_sizes)
    return TeacherOutput(detections, features, batched.image_sizes)
