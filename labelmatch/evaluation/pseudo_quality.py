"""Quality of a teacher's pseudo labels against the ground truth of the unlabeled images.

The three measures of the paper's Fig. 4: (a) precision (a pseudo box is a true positive when it
overlaps a ground-truth box of its class with IoU >= 0.5), (b) pseudo boxes per image next to
ground-truth boxes per image, (c) KL divergence between the pseudo labels' class distribution and
a reference one (the labeled prior, or the unlabeled ground truth). Classes are 1..C.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from labelmatch.method.pseudo_labels import PseudoLabels, split_by_thresholds


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


def class_distribution(labels: Tensor, num_classes: int) -> Tensor:
    """Share of each class among `labels` [N] (values 1..C): float64 [C], index c-1 = class c.

    Sums to 1, or is all zeros when there is no label at all (no distribution to speak of).
    """
    labels = labels.flatten().long()
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"labels must lie in 1..{num_classes}, got range "
            f"{labels.min().item()}..{labels.max().item()}"
        )
    counts = torch.bincount(labels.cpu() - 1, minlength=num_classes).double()
    total = counts.sum()
    return counts / total if total > 0 else counts


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


@torch.no_grad()
def pseudo_label_statistics(
    teacher: nn.Module,
    loader: Iterable[dict[str, Any]],
    reliable_thresholds: Tensor,
    uncertain_thresholds: Tensor,
    class_ratios: Tensor,
    num_classes: int,
) -> dict[str, float]:
    """Fig. 4 measures of the pseudo labels `teacher` gives the images of `loader`.

    loader: batches in the val format, {"images": [[3,H,W]], "targets": [dict(boxes [G,4],
    labels [G], ...)]}, boxes in the view frame of the images (the test transform; the teacher's
    model transform does not resize). Detections are split per class with the thresholds [C]
    exactly as in training (`split_by_thresholds`); "pseudo" = reliable + uncertain boxes.
    class_ratios [C]: the labeled prior the class distributions are compared with.

    Returns precision / reliable_precision (NaN without any such box), pseudo_per_image,
    reliable_per_image, gt_per_image, kl_to_prior and kl_to_gt = KL(pseudo || prior / ground
    truth) of the class distributions (NaN without pseudo boxes, or without ground truth for
    kl_to_gt), and num_images.
    """
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    reliable_thresholds = reliable_thresholds.to(device)
    uncertain_thresholds = uncertain_thresholds.to(device)
    was_training = teacher.training
    teacher.eval()
    counts = dict(num_images=0, gt=0, pseudo=0, pseudo_tp=0, reliable=0, reliable_tp=0)
    pseudo_labels, gt_labels = [], []
    try:
        for batch in loader:
            images = [image.to(device) for image in batch["images"]]
            for detections, target in zip(teacher(images), batch["targets"]):
                pseudo = split_by_thresholds(
                    detections["boxes"],
                    detections["scores"],
                    detections["labels"],
                    reliable_thresholds,
                    uncertain_thresholds,
                )
                gt_boxes, gt_labels_image = target["boxes"].to(device), target["labels"].to(device)
                # Within a class every reliable score is above every uncertain one and both keep
                # the detections' score order, so [reliable, uncertain] is in score order.
                boxes = torch.cat([pseudo.reliable_boxes, pseudo.uncertain_boxes])
                labels = torch.cat([pseudo.reliable_labels, pseudo.uncertain_labels])
                tp, n = match_precision(boxes, labels, gt_boxes, gt_labels_image)
                tp_r, n_r = match_precision(
                    pseudo.reliable_boxes, pseudo.reliable_labels, gt_boxes, gt_labels_image
                )
                counts["num_images"] += 1
                counts["gt"] += len(gt_boxes)
                counts["pseudo"] += n
                counts["pseudo_tp"] += tp
                counts["reliable"] += n_r
                counts["reliable_tp"] += tp_r
                pseudo_labels.append(labels.cpu())
                gt_labels.append(gt_labels_image.cpu())
    finally:
        teacher.train(was_training)
    return _summarise(counts, pseudo_labels, gt_labels, class_ratios, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def _summarise(
    counts: dict[str, int],
    pseudo_labels: list[Tensor],
    gt_labels: list[Tensor],
    class_ratios: Tensor,
    num_classes: int,
) -> dict[str, float]:
    num_images = counts["num_images"]
    if num_images == 0:
        raise ValueError("pseudo_label_statistics: the loader yielded no image")
    pseudo_dist = class_distribution(torch.cat(pseudo_labels), num_classes)
    gt_dist = class_distribution(torch.cat(gt_labels), num_classes)
    # A KL divergence needs both distributions: NaN without pseudo boxes (or ground truth).
    kl_to_prior, kl_to_gt = float("nan"), float("nan")
    if counts["pseudo"]:
        kl_to_prior = kl_divergence(pseudo_dist, torch.as_tensor(class_ratios))
        if counts["gt"]:
            kl_to_gt = kl_divergence(pseudo_dist, gt_dist)
    return {
        "precision": _ratio(counts["pseudo_tp"], counts["pseudo"]),
        "reliable_precision": _ratio(counts["reliable_tp"], counts["reliable"]),
        "pseudo_per_image": counts["pseudo"] / num_images,
        "reliable_per_image": counts["reliable"] / num_images,
        "gt_per_image": counts["gt"] / num_images,
        "kl_to_prior": kl_to_prior,
        "kl_to_gt": kl_to_gt,
        "num_images": num_images,
    }


# ------------------------------------------------------------------ counts over training batches
@dataclass
class PseudoLabelCounts:
    """Pseudo-label box counts over a set of images; per-class tensors are int64 [C], index c-1.

    "pseudo" boxes are the reliable plus the uncertain ones; a true positive is a pseudo box
    matched to a ground-truth box of its class (IoU >= 0.5, one-to-one, `match_precision`).
    """

    num_images: int
    reliable: Tensor
    uncertain: Tensor
    mined: int
    true_positives: Tensor
    reliable_true_positives: Tensor
    ground_truth: Tensor

    @classmethod
    def zeros(cls, num_classes: int) -> PseudoLabelCounts:
        zero = torch.zeros(num_classes, dtype=torch.long)
        return cls(0, zero, zero.clone(), 0, zero.clone(), zero.clone(), zero.clone())

    def __add__(self, other: PseudoLabelCounts) -> PseudoLabelCounts:
        return PseudoLabelCounts.from_vector(self.to_vector() + other.to_vector())

    def to_vector(self) -> Tensor:
        """float64 [5C + 2] (images, mined, then the five per-class counts): one all-reduce."""
        head = torch.tensor([self.num_images, self.mined], dtype=torch.float64)
        per_class = [self.reliable, self.uncertain, self.true_positives]
        per_class += [self.reliable_true_positives, self.ground_truth]
        return torch.cat([head, *(c.double().cpu() for c in per_class)])

    @classmethod
    def from_vector(cls, vector: Tensor) -> PseudoLabelCounts:
        vector = vector.detach().cpu().round().long()
        num_images, mined, rest = int(vector[0]), int(vector[1]), vector[2:]
        reliable, uncertain, tp, reliable_tp, gt = rest.reshape(5, -1)
        return cls(num_images, reliable, uncertain, mined, tp, reliable_tp, gt)


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


def count_pseudo_labels(
    pseudo: PseudoLabels, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int
) -> PseudoLabelCounts:
    """Counts of one image: its pseudo labels and its ground truth, both in the same frame."""
    reliable_boxes, reliable_labels = pseudo.reliable_boxes.cpu(), pseudo.reliable_labels.cpu()
    uncertain_boxes, uncertain_labels = pseudo.uncertain_boxes.cpu(), pseudo.uncertain_labels.cpu()
    gt_boxes, gt_labels = gt_boxes.cpu(), gt_labels.cpu()

    def per_class(labels: Tensor) -> Tensor:
        return torch.bincount(labels.long() - 1, minlength=num_classes)

    # Within a class every reliable score is above every uncertain one and both keep the
    # detections' score order, so [reliable, uncertain] is in score order.
    pseudo_boxes = torch.cat([reliable_boxes, uncertain_boxes])
    pseudo_labels = torch.cat([reliable_labels, uncertain_labels])
    return PseudoLabelCounts(
        num_images=1,
        reliable=per_class(reliable_labels),
        uncertain=per_class(uncertain_labels),
        mined=0,
        true_positives=true_positives_per_class(
            pseudo_boxes, pseudo_labels, gt_boxes, gt_labels, num_classes
        ),
        reliable_true_positives=true_positives_per_class(
            reliable_boxes, reliable_labels, gt_boxes, gt_labels, num_classes
        ),
        ground_truth=per_class(gt_labels),
    )


def summarize_counts(
    counts: PseudoLabelCounts,
    prior: Tensor,
    prior_boxes_per_image: float,
    class_names: Sequence[str],
    with_ground_truth: bool,
) -> dict[str, float]:
    """The Fig. 4 measures of `counts` (names without the `pseudo/` prefix); undefined values
    (a ratio over zero boxes) are left out rather than logged as NaN.

    prior [C]: the labeled class ratios ACT aims at (Eq. 4), prior_boxes_per_image its boxes
    per image. Ground-truth measures (precision, recall, gt_per_image, kl_to_gt, gt_share) only
    `with_ground_truth`, i.e. when the unlabeled images have annotations.
    """
    n = counts.num_images
    if n == 0:
        return {}
    pseudo = counts.reliable + counts.uncertain
    stats: dict[str, float] = {
        "reliable_per_image": counts.reliable.sum().item() / n,
        "uncertain_per_image": counts.uncertain.sum().item() / n,
        "mined_per_image": counts.mined / n,
        "boxes_per_image": pseudo.sum().item() / n,
        "prior_per_image": float(prior_boxes_per_image),
    }
    prior = torch.as_tensor(prior, dtype=torch.float64)
    stats.update({f"prior_share/{c}": float(r) for c, r in zip(class_names, prior)})
    if pseudo.sum() > 0:
        share = pseudo.double() / pseudo.sum()
        stats.update({f"share/{c}": float(r) for c, r in zip(class_names, share)})
        stats["kl_to_prior"] = kl_divergence(share, prior)
    if not with_ground_truth:
        return stats
    gt = counts.ground_truth
    stats["gt_per_image"] = gt.sum().item() / n
    if gt.sum() > 0:
        gt_share = gt.double() / gt.sum()
        stats.update({f"gt_share/{c}": float(r) for c, r in zip(class_names, gt_share)})
        stats["recall"] = counts.true_positives.sum().item() / gt.sum().item()
        if pseudo.sum() > 0:
            stats["kl_to_gt"] = kl_divergence(share, gt_share)
    if pseudo.sum() > 0:
        stats["precision"] = counts.true_positives.sum().item() / pseudo.sum().item()
    if counts.reliable.sum() > 0:
        stats["reliable_precision"] = (
            counts.reliable_true_positives.sum().item() / counts.reliable.sum().item()
        )
    for c, name in enumerate(class_names):
        if pseudo[c] > 0:
            stats[f"precision/{name}"] = counts.true_positives[c].item() / pseudo[c].item()
        if gt[c] > 0:
            stats[f"recall/{name}"] = counts.true_positives[c].item() / gt[c].item()
    return stats
