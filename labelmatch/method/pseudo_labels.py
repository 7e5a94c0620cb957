"""Teacher detections -> reliable / uncertain pseudo labels, and their move to the student view.

Pure functions (docs/method.md §3): per class c, score >= t_r[c] is reliable,
t_u[c] <= score < t_r[c] is uncertain, lower is dropped.

The batch functions (`split_batch_by_thresholds`, `map_pseudo_labels`) handle all images of a
step at once: the rows of every image are concatenated, decided together and split back into
images (`labelmatch.method.rows`), so a step waits for a GPU once per function rather than a few
times per image. The per-image forms are the batch functions on one image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from labelmatch.data.class_prior import ClassPrior
from labelmatch.data.geometry import clip_boxes, map_boxes, stacked
from labelmatch.method.rows import from_host, grouped_rows, segment_ids


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
        """The same labels in another view: boxes through `matrix` [3,3], clipped to (h, w);
        `map_pseudo_labels` on this one image."""
        return map_pseudo_labels([self], [matrix], [image_size])[0]


def map_pseudo_labels(
    pseudo: Sequence[PseudoLabels],
    matrices: Sequence[Tensor] | Tensor,
    image_sizes: Sequence[tuple[int, int]],
) -> list[PseudoLabels]:
    """Each image's labels in another view: its boxes through its matrix ([3,3] each, or one
    [B,3,3] tensor), clipped to its (h, w) in `image_sizes`.

    Boxes that end with no area after clipping (e.g. pushed out by a crop) are dropped with
    their labels and scores; with flips and scales only, none is. Order is kept.
    """
    if not len(pseudo) == len(matrices) == len(image_sizes):
        raise ValueError(
            f"need one matrix and one size per image: {len(pseudo)} images, "
            f"{len(matrices)} matrices, {len(image_sizes)} sizes"
        )
    if not pseudo:
        return []
    parts = [t for p in pseudo for t in (p.reliable_boxes, p.uncertain_boxes)]
    boxes = torch.cat(parts)
    device = boxes.device
    segment = segment_ids([len(t) for t in parts], device)  # 2i reliable, 2i+1 uncertain
    image = torch.div(segment, 2, rounding_mode="floor")
    mapped = clip_boxes(
        map_boxes(boxes, stacked(matrices).to(device, boxes.dtype)[image]),
        from_host(image_sizes, boxes.dtype, device)[image],
    )
    dropped = ~((mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1]))
    order, sizes = grouped_rows(2 * segment + dropped.long(), 2 * len(parts))
    labels = torch.cat([t for p in pseudo for t in (p.reliable_labels, p.uncertain_labels)])
    scores = torch.cat(
        [
            t
            for p in pseudo
            for t in (p.uncertain_scores.new_zeros(len(p.reliable_labels)), p.uncertain_scores)
        ]
    )
    # Groups 4i, 4i + 2: image i's kept reliable and uncertain rows (4i + 1, 4i + 3: dropped).
    groups = [t[order].split(sizes) for t in (mapped, labels, scores)]
    return [_from_groups(groups, 4 * i, 4 * i + 2) for i in range(len(pseudo))]


def _from_groups(groups: list[tuple[Tensor, ...]], reliable: int, uncertain: int) -> PseudoLabels:
    """One image's labels from groups (boxes, labels, scores, each split into groups): its
    reliable rows are group `reliable`, its uncertain ones group `uncertain`."""
    boxes, labels, scores = groups
    return PseudoLabels(
        reliable_boxes=boxes[reliable],
        reliable_labels=labels[reliable],
        uncertain_boxes=boxes[uncertain],
        uncertain_labels=labels[uncertain],
        uncertain_scores=scores[uncertain],
    )


def split_by_thresholds(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    reliable_thresholds: Tensor,
    uncertain_thresholds: Tensor,
) -> PseudoLabels:
    """Three-way split of one image's post-NMS teacher detections (`split_batch_by_thresholds`
    on one image): boxes [N,4], scores [N], labels [N] in 1..C; thresholds [C] indexed by
    label - 1."""
    detections = {"boxes": boxes, "scores": scores, "labels": labels}
    return split_batch_by_thresholds([detections], reliable_thresholds, uncertain_thresholds)[0]


def split_batch_by_thresholds(
    detections: Sequence[Mapping[str, Tensor]],
    reliable_thresholds: Tensor,
    uncertain_thresholds: Tensor,
) -> list[PseudoLabels]:
    """Three-way split of each image's post-NMS teacher detections, torchvision's per-image
    dicts (boxes [N_i,4], scores [N_i], labels [N_i] in 1..C); thresholds [C] indexed by
    label - 1. Order is kept within each part."""
    if not detections:
        return []
    boxes = torch.cat([d["boxes"] for d in detections])
    scores = torch.cat([d["scores"] for d in detections])
    labels = torch.cat([d["labels"] for d in detections])
    image = segment_ids([len(d["boxes"]) for d in detections], boxes.device)
    reliable = scores >= reliable_thresholds[labels - 1]
    uncertain = (scores >= uncertain_thresholds[labels - 1]) & ~reliable
    # Groups 3i, 3i + 1, 3i + 2: image i's reliable, uncertain and dropped detections.
    part = torch.where(reliable, 0, torch.where(uncertain, 1, 2))
    order, sizes = grouped_rows(3 * image + part, 3 * len(detections))
    groups = [t[order].split(sizes) for t in (boxes, labels, scores)]
    return [_from_groups(groups, 3 * i, 3 * i + 1) for i in range(len(detections))]


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
