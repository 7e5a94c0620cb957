"""Teacher detections -> reliable / uncertain pseudo labels, and their move to the student view.

Pure functions (docs/method.md §3): per class c, score >= t_r[c] is reliable,
t_u[c] <= score < t_r[c] is uncertain, lower is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from labelmatch.data.class_prior import ClassPrior
from labelmatch.data.geometry import map_boxes


@dataclass
class PseudoLabels:
    """Pseudo labels of one image, all in one view's frame.

    reliable_boxes [R,4] xyxy, reliable_labels [R] (1..C), uncertain_boxes [U,4],
    uncertain_labels [U], uncertain_scores [U].
    """

    reliable_boxes: Tensor
    reliable_labels: Tensor
    uncertain_boxes: Tensor
    uncertain_labels: Tensor
    uncertain_scores: Tensor

    def map(self, matrix: Tensor, image_size: tuple[int, int]) -> PseudoLabels:
        """The same labels in another view: boxes through `matrix` [3,3], clipped to (h, w).

        Boxes that end with no area after clipping (e.g. pushed out by a crop) are dropped with
        their labels; with flips and scales only, none is.
        """
        reliable, keep_r = _map_and_clip(self.reliable_boxes, matrix, image_size)
        uncertain, keep_u = _map_and_clip(self.uncertain_boxes, matrix, image_size)
        return PseudoLabels(
            reliable_boxes=reliable,
            reliable_labels=self.reliable_labels[keep_r],
            uncertain_boxes=uncertain,
            uncertain_labels=self.uncertain_labels[keep_u],
            uncertain_scores=self.uncertain_scores[keep_u],
        )


def _map_and_clip(
    boxes: Tensor, matrix: Tensor, image_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    height, width = image_size
    mapped = map_boxes(boxes, matrix.to(boxes.device, boxes.dtype))
    mapped[:, 0::2] = mapped[:, 0::2].clamp(0, width)
    mapped[:, 1::2] = mapped[:, 1::2].clamp(0, height)
    keep = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    return mapped[keep], keep


def split_by_thresholds(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    reliable_thresholds: Tensor,
    uncertain_thresholds: Tensor,
) -> PseudoLabels:
    """Three-way split of one image's post-NMS teacher detections.

    boxes [N,4], scores [N], labels [N] in 1..C; thresholds [C] indexed by label - 1.
    """
    reliable_thr = reliable_thresholds[labels - 1]
    uncertain_thr = uncertain_thresholds[labels - 1]
    reliable = scores >= reliable_thr
    uncertain = (scores >= uncertain_thr) & ~reliable
    return PseudoLabels(
        reliable_boxes=boxes[reliable],
        reliable_labels=labels[reliable],
        uncertain_boxes=boxes[uncertain],
        uncertain_labels=labels[uncertain],
        uncertain_scores=scores[uncertain],
    )


def merge_uncertain_into_reliable(pseudo: PseudoLabels) -> PseudoLabels:
    """Fig. 6c "iou" ablation: uncertain boxes become ordinary hard labels."""
    empty = pseudo.uncertain_boxes[:0]
    return PseudoLabels(
        reliable_boxes=torch.cat([pseudo.reliable_boxes, pseudo.uncertain_boxes]),
        reliable_labels=torch.cat([pseudo.reliable_labels, pseudo.uncertain_labels]),
        uncertain_boxes=empty,
        uncertain_labels=pseudo.uncertain_labels[:0],
        uncertain_scores=pseudo.uncertain_scores[:0],
    )


@dataclass
class PseudoLabelBatch:
    """What one unsupervised step did, output by the module's training step for callbacks.

    strong_images: [3,H,W] per image, the student's views; pseudo_strong / pseudo_weak: the same
    pseudo labels per image in the strong and weak frames; gt_weak_boxes [G,4] / gt_weak_labels
    [G]: the unlabeled images' ground truth in the weak frame ([0,4] when they have none);
    num_mined: uncertain boxes RPLM promoted in the batch. The thresholds that split them:
    threshold_refreshes, the ACT refreshes that have set them (0: fixed thresholds), and
    threshold_prior, the class prior the latest refresh aimed at (None: fixed thresholds).
    """

    strong_images: list[Tensor]
    pseudo_strong: list[PseudoLabels]
    pseudo_weak: list[PseudoLabels]
    gt_weak_boxes: list[Tensor]
    gt_weak_labels: list[Tensor]
    num_mined: int
    threshold_refreshes: int = 0
    threshold_prior: ClassPrior | None = None

    @property
    def threshold_updates(self) -> int:
        """How many times the thresholds that split this batch have been set: ACT's refreshes,
        or 1 for fixed thresholds (set once, when the teacher starts labelling). Online ACT's
        queue updates are not counted: they come every few steps."""
        return max(self.threshold_refreshes, 1)

    @property
    def num_pseudo_boxes(self) -> int:
        """Reliable + uncertain pseudo boxes of the batch."""
        return sum(len(p.reliable_boxes) + len(p.uncertain_boxes) for p in self.pseudo_strong)


def count_by_thresholds(
    labels: Tensor, scores: Tensor, reliable_thresholds: Tensor, uncertain_thresholds: Tensor
) -> tuple[int, int]:
    """(reliable, uncertain) boxes among detections labels [N] (1..C), scores [N], split as
    `split_by_thresholds` splits them."""
    reliable = scores >= reliable_thresholds.to(scores.device)[labels - 1]
    uncertain = (scores >= uncertain_thresholds.to(scores.device)[labels - 1]) & ~reliable
    return int(reliable.sum()), int(uncertain.sum())
