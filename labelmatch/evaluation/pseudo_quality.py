"""Quality of a teacher's pseudo labels against the ground truth of the unlabeled images.

The measures of the paper's Fig. 4: (a) precision (a pseudo box is a true positive when it
overlaps a ground-truth box of its class with IoU >= 0.5) and recall, (b) pseudo boxes per image
next to ground-truth boxes per image, (c) KL divergence between the pseudo labels' class
distribution and a reference one (the labeled prior, or the unlabeled ground truth). One
implementation, `PseudoLabelQuality`, serves the training callback
(`labelmatch.callbacks.pseudo_statistics`) and the quality benchmark (`benchmarks/quality.py`).
Classes are 1..C.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

from labelmatch.data.class_prior import ClassPrior

if TYPE_CHECKING:
    from labelmatch.method.pseudo_labels import PseudoLabels


def match_precision(
    pred_boxes: Tensor,
    pred_labels: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    pred_scores: Tensor | None = None,
) -> tuple[int, int]:
    """(true positives, number of predictions) of one image's pseudo boxes (Fig. 4a).

    pred_boxes [N,4] and gt_boxes [G,4] xyxy in the same frame; pred_labels [N], gt_labels [G].
    Matching is greedy and one-to-one, as in COCO/VOC evaluation: predictions are visited by
    descending `pred_scores` (in the given order when None; torchvision detections already come
    sorted by score), and each claims the not yet claimed ground-truth box of its own class with
    the highest IoU, if that IoU >= `iou_threshold`. So one ground-truth box validates at most
    one prediction; a duplicate of an already matched box is a false positive.
    """
    num_predictions = len(pred_boxes)
    if num_predictions == 0 or len(gt_boxes) == 0:
        return 0, num_predictions
    iou = box_iou(pred_boxes.float(), gt_boxes.float())
    iou[pred_labels[:, None] != gt_labels[None, :]] = -1.0  # only boxes of the same class match
    order = (
        torch.arange(num_predictions)
        if pred_scores is None
        else torch.argsort(pred_scores, descending=True, stable=True)
    )
    claimed = torch.zeros(len(gt_boxes), dtype=torch.bool, device=iou.device)
    true_positives = 0
    for index in order.tolist():
        overlaps = iou[index].masked_fill(claimed, -1.0)
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold:
            claimed[best] = True
            true_positives += 1
    return true_positives, num_predictions


def kl_divergence(p: Tensor, q: Tensor, eps: float = 1e-8) -> float:
    """KL(p || q) = sum_c p_c log(p_c / q_c) in nats, for p, q [C] on the classes.

    Used as KL(pseudo || reference): p the pseudo labels' class distribution, q the labeled prior
    (never zero there: ACT counts a class without labeled box as 1, docs/method.md §2) or the
    ground truth. Classes with p_c = 0 contribute 0 (0 log 0 = 0); q_c is floored at `eps`, so
    pseudo mass on a class absent from q costs p_c log(p_c / eps) instead of infinity.
    """
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must be 1-D and equal")
    p, q = p.double(), q.double().clamp(min=eps)
    present = p > 0
    return float((p[present] * (p[present] / q[present]).log()).sum())


def true_positives_per_class(
    boxes: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int
) -> Tensor:
    """int64 [C]: how many of one image's boxes [N,4] (labels [N], in score order) match a
    ground-truth box [G,4] (gt_labels [G]) of their class, as `match_precision` matches.

    Boxes of different classes never match, so matching class by class gives the same pairs
    as matching the whole image at once; one call per class present, not per box.
    """
    counts = torch.zeros(num_classes, dtype=torch.long)
    for c in labels.unique().tolist():
        mine, theirs = labels == c, gt_labels == c
        counts[c - 1] = match_precision(
            boxes[mine], labels[mine], gt_boxes[theirs], gt_labels[theirs]
        )[0]
    return counts


def _to_host(per_image: Sequence[Tensor]) -> list[Tensor]:
    """The images' tensors (each [N_i, ...]) on the CPU, copied there together."""
    if not per_image:
        return []
    return list(torch.cat(list(per_image)).cpu().split([len(t) for t in per_image]))


# The per-class counters (int64 [C], index c-1 = class c): "pseudo" boxes are the reliable plus
# the uncertain ones; a true positive is a pseudo box matched to a ground-truth box of its class.
PER_CLASS_COUNTS = ("reliable", "uncertain", "true_positives", "reliable_true_positives",
                    "ground_truth")  # fmt: skip


class PseudoLabelQuality(Metric):
    """The Fig. 4 measures of the pseudo labels of the images passed to `update` since the last
    `reset`, as counts summed over the images and, under DDP, over the ranks (torchmetrics'
    "sum" reduction at `compute`).

    Args:
        class_names: the C class names, in label order (label c is class_names[c-1]).
        with_ground_truth: whether the images have annotations; without, `compute` leaves out
            every measure that needs them.
    """

    full_state_update = False

    def __init__(self, class_names: Sequence[str], with_ground_truth: bool = True) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.with_ground_truth = with_ground_truth
        zero, per_class = torch.tensor(0), torch.zeros(len(self.class_names), dtype=torch.long)
        self.add_state("num_images", zero.clone(), dist_reduce_fx="sum")
        self.add_state("mined", zero.clone(), dist_reduce_fx="sum")
        for name in PER_CLASS_COUNTS:
            self.add_state(name, per_class.clone(), dist_reduce_fx="sum")

    def update(
        self,
        pseudo: Sequence[PseudoLabels],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        num_mined: int = 0,
    ) -> None:
        """Count a batch: per image its pseudo labels (`PseudoLabels`: reliable and uncertain
        boxes [N,4] with labels [N], each in score order) and its ground truth (boxes [G,4],
        labels [G]) in the same frame; `num_mined` uncertain boxes RPLM made reliable."""
        num_classes = len(self.class_names)

        def per_class(labels: Tensor) -> Tensor:
            return torch.bincount(labels.long() - 1, minlength=num_classes)

        # The matching runs on the CPU. One copy there per kind of tensor for the whole batch: a
        # copy per tensor would make the host wait for a GPU six times per image at every step.
        on_host = zip(
            *(
                _to_host(tensors)
                for tensors in (
                    [p.reliable_boxes for p in pseudo],
                    [p.reliable_labels for p in pseudo],
                    [p.uncertain_boxes for p in pseudo],
                    [p.uncertain_labels for p in pseudo],
                    list(gt_boxes),
                    list(gt_labels),
                )
            ),
            strict=True,
        )
        for (
            reliable_boxes,
            reliable_labels,
            uncertain_boxes,
            uncertain_labels,
            boxes,
            labels,
        ) in on_host:
            # Within a class every reliable score is above every uncertain one and both keep the
            # detections' score order, so [reliable, uncertain] is in score order.
            pseudo_boxes = torch.cat([reliable_boxes, uncertain_boxes])
            pseudo_labels = torch.cat([reliable_labels, uncertain_labels])
            counts = {
                "reliable": per_class(reliable_labels),
                "uncertain": per_class(uncertain_labels),
                "true_positives": true_positives_per_class(
                    pseudo_boxes, pseudo_labels, boxes, labels, num_classes
                ),
                "reliable_true_positives": true_positives_per_class(
                    reliable_boxes, reliable_labels, boxes, labels, num_classes
                ),
                "ground_truth": per_class(labels),
            }
            for name, count in counts.items():
                state = getattr(self, name)
                setattr(self, name, state + count.to(state.device))
            self.num_images += 1
        self.mined += num_mined

    def compute(self, prior: ClassPrior) -> dict[str, float]:
        """The measures, named without the `pseudo/` prefix the callback logs them under;
        undefined ones (a ratio over zero boxes) are left out rather than given as NaN, and
        nothing at all without images.

        prior: the class prior ACT's thresholds aim at (Eq. 4: the labeled one, or the latest
        refresh's manual, estimated or oracle prior): `prior_share/<class>` and
        `prior_per_image` are its ratios and boxes per image, `kl_to_prior` = KL(pseudo share
        || its ratios). Ground-truth measures (precision, recall, gt_per_image, kl_to_gt,
        gt_share) only `with_ground_truth`.
        """
        n = int(self.num_images)
        if n == 0:
            return {}
        names = self.class_names
        reliable, uncertain = self.reliable.cpu(), self.uncertain.cpu()
        true_positives = self.true_positives.cpu()
        pseudo = reliable + uncertain
        stats: dict[str, float] = {
            "reliable_per_image": reliable.sum().item() / n,
            "uncertain_per_image": uncertain.sum().item() / n,
            "mined_per_image": int(self.mined) / n,
            "boxes_per_image": pseudo.sum().item() / n,
            "prior_per_image": float(prior.boxes_per_image),
        }
        ratios = torch.as_tensor(prior.class_ratios, dtype=torch.float64)
        stats.update({f"prior_share/{c}": float(r) for c, r in zip(names, ratios)})
        if pseudo.sum() > 0:
            share = pseudo.double() / pseudo.sum()
            stats.update({f"share/{c}": float(r) for c, r in zip(names, share)})
            stats["kl_to_prior"] = kl_divergence(share, ratios)
        if not self.with_ground_truth:
            return stats
        gt = self.ground_truth.cpu()
        stats["gt_per_image"] = gt.sum().item() / n
        if gt.sum() > 0:
            gt_share = gt.double() / gt.sum()
            stats.update({f"gt_share/{c}": float(r) for c, r in zip(names, gt_share)})
            stats["recall"] = true_positives.sum().item() / gt.sum().item()
            if pseudo.sum() > 0:
                stats["kl_to_gt"] = kl_divergence(share, gt_share)
        if pseudo.sum() > 0:
            stats["precision"] = true_positives.sum().item() / pseudo.sum().item()
        if reliable.sum() > 0:
            reliable_tp = self.reliable_true_positives.cpu()
            stats["reliable_precision"] = reliable_tp.sum().item() / reliable.sum().item()
        for c, name in enumerate(names):
            if pseudo[c] > 0:
                stats[f"precision/{name}"] = true_positives[c].item() / pseudo[c].item()
            if gt[c] > 0:
                stats[f"recall/{name}"] = true_positives[c].item() / gt[c].item()
        return stats

    def counts(self) -> dict[str, Tensor]:
        """The counters (this rank's), for a checkpoint: `restore` adds them back."""
        return {name: getattr(self, name).detach().cpu().clone() for name in self._defaults}

    def restore(self, counts: dict[str, Tensor]) -> None:
        """Add saved `counts` as one update (a resumed run continues its window)."""
        for name in self._defaults:
            state = getattr(self, name)
            setattr(self, name, state + torch.as_tensor(counts[name]).to(state.device))
        self._update_count += 1  # what `update` counts: `compute` warns after no update
