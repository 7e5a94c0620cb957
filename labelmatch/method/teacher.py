"""The teacher's pass on the weak views: detections for pseudo-labelling plus the features that
proposal self-assignment reuses (so the teacher backbone runs once per step, not twice)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads

from labelmatch.errors import ConfigError

# Score floor of the teacher's detections when it pseudo-labels. The model is built with the
# official test-time floor 0.001 (labelmatch/models/faster_rcnn.py), which evaluation uses; but
# ACT clamps both thresholds to >= 0.05 (Eq. 5-6, docs/method.md §2), so a box below 0.05 never
# becomes a pseudo label. Keeping 0.05 here leaves the pseudo labels exactly what they were when
# 0.05 was the model's floor (and spares NMS the extra boxes); the official pass (floor 0.001,
# then the thresholds) keeps the same boxes, since a lower-scored box can neither suppress a
# higher-scored one in class-wise NMS nor displace it from the top 100.
PSEUDO_LABEL_SCORE_FLOOR = 0.05


def check_above_pseudo_label_floor(setting: str, too_low: bool) -> None:
    """ConfigError naming `setting` (e.g. "method.act.min_threshold=0.01 is") when `too_low`: a
    threshold under the floor would not act, since no box scoring under it is a pseudo label."""
    if too_low:
        raise ConfigError(
            f"{setting} below the teacher's pseudo-labelling score floor "
            f"{PSEUDO_LABEL_SCORE_FLOOR} (labelmatch/method/teacher.py): no box scoring under it "
            "becomes a pseudo label, so such a threshold would not act"
        )


@contextmanager
def score_floor(roi_heads: RoIHeads, floor: float) -> Iterator[None]:
    """The box head's score floor (`RoIHeads.score_thresh`) set to `floor` inside the block,
    restored after it, even on an exception."""
    saved, roi_heads.score_thresh = roi_heads.score_thresh, floor
    try:
        yield
    finally:
        roi_heads.score_thresh = saved


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

    Detections are those scoring above PSEUDO_LABEL_SCORE_FLOOR (torchvision keeps scores > its
    floor). The model's transform never resizes (PreResizedTransform), so detections are already
    in the frame of the images given.
    """
    batched, _ = teacher.transform(images)
    features = teacher.backbone(batched.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = teacher.rpn(batched, features)
    with score_floor(teacher.roi_heads, PSEUDO_LABEL_SCORE_FLOOR):
        detections, _ = teacher.roi_heads(features, proposals, batched.image_sizes)
    return TeacherOutput(detections, features, batched.image_sizes)
