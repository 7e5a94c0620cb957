"""The student's loss on the strong views of unlabeled images (docs/method.md §3-4, Eq. 7-8).

RPN: reliable and uncertain pseudo boxes are its targets. ROI head: the student's proposals are
assigned three ways (reliable-positive / uncertain / negative) and sampled; reliable positives
and negatives get the usual hard Fast R-CNN loss, uncertain proposals are mapped into the
teacher's weak view and classified there by the teacher's ROI head on the features it already
computed for pseudo-labelling (proposal self-assignment, a soft cross-entropy), unless RPLM
promotes their box to reliable, in which case they get hard targets instead.

Built from torchvision's `RoIHeads` parts (`box_roi_pool`, `box_head`, `box_predictor`,
`box_coder`, `proposal_matcher` thresholds, `fg_bg_sampler` sizes); torchvision is not forked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.ops import clip_boxes_to_image

from labelmatch.data.geometry import map_boxes
from labelmatch.method.assignment import ProposalKind, assign_proposals, sample_proposals
from labelmatch.method.losses import soft_cross_entropy
from labelmatch.method.pseudo_labels import PseudoLabels
from labelmatch.method.teacher import TeacherOutput

# Signature of `labelmatch.method.mining.mine_reliable`, owned by the RPLM callback.
MiningPolicy = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass
class SampledRois:
    """The ROI samples of the whole batch, rows concatenated over images.

    proposals: per image [M_i,4] (strong frame); labels [M] (0 = background); targets [M,4] the box
    each row regresses to (zeros for negatives); kind [M] (0 neg, 1 pos, 2 uncertain);
    uncertain_box [M] index of the row's uncertain box within its image (-1 otherwise).
    """

    proposals: list[Tensor]
    labels: Tensor
    targets: Tensor
    kind: Tensor
    uncertain_box: Tensor


def sample_rois(
    proposals: list[Tensor],
    pseudo: list[PseudoLabels],
    num_samples: int,
    positive_fraction: float,
    fg_iou: float,
    bg_iou: float,
    uncertain_threshold: float,
    uncertain_metric: str = "iou",
) -> SampledRois:
    """Three-way assignment and sampling of each image's proposals (docs/method.md §3).

    Pseudo boxes are added to the proposals, as torchvision's `add_gt_proposals` does for ground
    truth, so every pseudo box has at least one matching proposal.
    """
    rows: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    for image_proposals, labels in zip(proposals, pseudo):
        candidates = torch.cat([image_proposals, labels.reliable_boxes, labels.uncertain_boxes])
        assignment = assign_proposals(
            candidates,
            labels.reliable_boxes,
            labels.uncertain_boxes,
            fg_iou=fg_iou,
            bg_iou=bg_iou,
            uncertain_threshold=uncertain_threshold,
            uncertain_metric=uncertain_metric,
        )
        positive, uncertain, negative = sample_proposals(
            assignment.kind, num_samples, positive_fraction
        )
        index = torch.cat([positive, uncertain, negative])
        kind = assignment.kind[index]
        matched_reliable = assignment.matched_reliable[index]
        matched_uncertain = assignment.matched_uncertain[index]
        row_labels = torch.zeros_like(kind)
        targets = torch.zeros(len(index), 4, dtype=candidates.dtype, device=candidates.device)
        is_pos, is_unc = kind == ProposalKind.POSITIVE, kind == ProposalKind.UNCERTAIN
        row_labels[is_pos] = labels.reliable_labels[matched_reliable[is_pos]]
        targets[is_pos] = labels.reliable_boxes[matched_reliable[is_pos]]
        row_labels[is_unc] = labels.uncertain_labels[matched_uncertain[is_unc]]
        targets[is_unc] = labels.uncertain_boxes[matched_uncertain[is_unc]]
        uncertain_box = torch.where(is_unc, matched_uncertain, torch.full_like(kind, -1))
        rows.append((candidates[index], row_labels, targets, kind, uncertain_box))
    sampled, labels, targets, kinds, uncertain_boxes = zip(*rows)
    return SampledRois(
        proposals=list(sampled),
        labels=torch.cat(labels),
        targets=torch.cat(targets),
        kind=torch.cat(kinds),
        uncertain_box=torch.cat(uncertain_boxes),
    )


def unlabeled_losses(
    student: FasterRCNN,
    teacher: FasterRCNN,
    strong_images: list[Tensor],
    pseudo_strong: list[PseudoLabels],
    pseudo_weak: list[PseudoLabels],
    strong_to_weak: list[Tensor],
    teacher_out: TeacherOutput,
    uncertain_mode: str = "self",
    uncertain_threshold: float = 0.5,
    uncertain_metric: str = "iou",
    teacher_temperature: float = 0.5,
    student_temperature: float = 1.0,
    mining: MiningPolicy | None = None,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """L_u on a batch of strong views; returns (losses, statistics).

    `pseudo_strong[i]` and `pseudo_weak[i]` are the same pseudo labels in the strong and weak
    frames; `strong_to_weak[i]` [3,3] maps strong-view points into the weak view.
    """
    batched, _ = student.transform(strong_images)
    features = student.backbone(batched.tensors)
    rpn_targets = [
        {
            "boxes": torch.cat([p.reliable_boxes, p.uncertain_boxes]),
            "labels": torch.cat([p.reliable_labels, p.uncertain_labels]),
        }
        for p in pseudo_strong
    ]
    proposals, rpn_losses = student.rpn(batched, features, rpn_targets)

    heads = student.roi_heads
    num_samples = heads.fg_bg_sampler.batch_size_per_image
    rois = sample_rois(
        proposals,
        pseudo_strong,
        num_samples=num_samples,
        positive_fraction=heads.fg_bg_sampler.positive_fraction,
        fg_iou=heads.proposal_matcher.high_threshold,
        bg_iou=heads.proposal_matcher.low_threshold,
        uncertain_threshold=uncertain_threshold,
        uncertain_metric=uncertain_metric,
    )
    box_features = heads.box_head(heads.box_roi_pool(features, rois.proposals, batched.image_sizes))
    class_logits, box_regression = heads.box_predictor(box_features)

    uncertain_rows = torch.nonzero(rois.kind == ProposalKind.UNCERTAIN).squeeze(1)
    mined_rows = torch.zeros_like(rois.kind, dtype=torch.bool)
    soft_loss = class_logits.sum() * 0.0
    num_mined = 0
    if uncertain_mode == "self" and len(uncertain_rows) > 0:
        teacher_logits, promoted_rows, num_mined = _teacher_on_uncertain(
            teacher, teacher_out, rois, pseudo_weak, strong_to_weak, mining
        )
        mined_rows[uncertain_rows] = promoted_rows
        soft_loss = soft_cross_entropy(
            class_logits[uncertain_rows],
            teacher_logits,
            weights=(~promoted_rows).float(),
            normalizer=float(len(strong_images) * num_samples),
            teacher_temperature=teacher_temperature,
            student_temperature=student_temperature,
        )

    hard_cls, hard_box = _hard_roi_loss(
        heads,
        class_logits,
        box_regression,
        rois,
        positive=(rois.kind == ProposalKind.POSITIVE) | mined_rows,
    )
    losses = {
        "rpn_objectness": rpn_losses["loss_objectness"],
        "rpn_box": rpn_losses["loss_rpn_box_reg"],
        "roi_cls": hard_cls,
        "roi_box": hard_box,
        "roi_soft": soft_loss,
    }
    num_images = len(strong_images)
    stats = {
        "reliable_per_image": sum(len(p.reliable_boxes) for p in pseudo_strong) / num_images,
        "uncertain_per_image": sum(len(p.uncertain_boxes) for p in pseudo_strong) / num_images,
        "mined_per_image": num_mined / num_images,
    }
    return losses, stats


def _teacher_on_uncertain(
    teacher: FasterRCNN,
    teacher_out: TeacherOutput,
    rois: SampledRois,
    pseudo_weak: list[PseudoLabels],
    strong_to_weak: list[Tensor],
    mining: MiningPolicy | None,
) -> tuple[Tensor, Tensor, int]:
    """Proposal self-assignment: the teacher's ROI head on the uncertain proposals.

    Returns the teacher's class logits [Mu,K] for the uncertain rows (in row order), which of
    those rows belong to a box RPLM promotes [Mu] bool, and the number of promoted boxes.
    """
    heads = teacher.roi_heads
    weak_proposals, row_labels, row_boxes, promoted_rows = [], [], [], []
    start = 0
    for image_proposals, matrix in zip(rois.proposals, strong_to_weak):
        stop = start + len(image_proposals)
        is_unc = rois.kind[start:stop] == ProposalKind.UNCERTAIN
        weak_proposals.append(map_boxes(image_proposals[is_unc], matrix.to(image_proposals)))
        row_labels.append(rois.labels[start:stop][is_unc])
        row_boxes.append(rois.uncertain_box[start:stop][is_unc])
        start = stop
    with torch.no_grad():
        pooled = heads.box_roi_pool(teacher_out.features, weak_proposals, teacher_out.image_sizes)
        teacher_logits, teacher_regression = heads.box_predictor(heads.box_head(pooled))
    if mining is None:
        none_promoted = torch.zeros(
            len(teacher_logits), dtype=torch.bool, device=teacher_logits.device
        )
        return teacher_logits, none_promoted, 0

    # RPLM (docs/method.md §4): the teacher refines each uncertain proposal; per uncertain box, the
    # mean refined-box IoU and mean score of the box's class decide a promotion, every step.
    refined = heads.box_coder.decode(teacher_regression, weak_proposals).reshape(
        len(teacher_logits), -1, 4
    )
    labels = torch.cat(row_labels)
    rows = torch.arange(len(labels), device=labels.device)
    refined_boxes = refined[rows, labels]
    class_scores = F.softmax(teacher_logits, dim=-1)[rows, labels]
    num_mined, start = 0, 0
    for image_pseudo, box_index, image_size in zip(pseudo_weak, row_boxes, teacher_out.image_sizes):
        stop = start + len(box_index)
        # Refined boxes are clipped to the image, as torchvision's and MMDetection's decoding do.
        image_refined = clip_boxes_to_image(refined_boxes[start:stop], image_size)
        promoted_boxes = mining(
            image_pseudo.uncertain_boxes,
            image_pseudo.uncertain_labels,
            box_index,
            image_refined,
            class_scores[start:stop],
        )
        promoted_rows.append(promoted_boxes[box_index])
        num_mined += int(promoted_boxes.sum())
        start = stop
    return teacher_logits, torch.cat(promoted_rows), num_mined


def _hard_roi_loss(
    heads,
    class_logits: Tensor,
    box_regression: Tensor,
    rois: SampledRois,
    positive: Tensor,
) -> tuple[Tensor, Tensor]:
    """Fast R-CNN loss on the hard rows (negatives, positives, promoted uncertain rows).

    class_logits [M, K+1], box_regression [M, (K+1)·4], positive [M] bool (reliable positives
    and RPLM-promoted uncertain rows); rows of `rois` in the same order.

    Normalised as MMDetection 2.x `BBoxHead.loss`, which the official LabelMatch head calls with
    label weight 1 on positives, negatives and promoted rows and 0 on the other uncertain rows
    (docs/method.md §3-4):
      classification: Σ CE over the hard rows / their number (avg_factor = rows with weight > 0);
                      uncertain rows that stay soft are in neither the sum nor the count;
      regression:     Σ smooth-L1 over the positive rows / all sampled rows M (avg_factor =
                      bbox_targets.size(0), the soft uncertain rows included).
    On labeled images every sampled row is positive or negative, so both match torchvision's
    `fastrcnn_loss` there. The regression loss itself is torchvision's (smooth L1, beta 1/9, as in
    the supervised branch), where MMDetection's config has plain L1 (docs/method.md §7).
    """
    hard = (rois.kind == ProposalKind.NEGATIVE) | positive  # rois.labels is 0 on negatives
    num_hard = max(int(hard.sum()), 1)
    cls_loss = F.cross_entropy(class_logits[hard], rois.labels[hard], reduction="sum") / num_hard

    num_rows = max(len(rois.labels), 1)
    positive_rows = torch.nonzero(positive).squeeze(1)
    if len(positive_rows) == 0:
        return cls_loss, box_regression.sum() * 0.0
    proposals = torch.cat(rois.proposals)
    regression_targets = heads.box_coder.encode_single(
        rois.targets[positive_rows], proposals[positive_rows]
    )
    predicted = box_regression.reshape(len(box_regression), -1, 4)[
        positive_rows, rois.labels[positive_rows]
    ]
    box_loss = F.smooth_l1_loss(predicted, regression_targets, beta=1 / 9, reduction="sum")
    return cls_loss, box_loss / num_rows
