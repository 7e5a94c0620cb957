"""The student's loss on the strong views of unlabeled images, L_u (docs/method.md §3-4, Eq. 7-8).

One object, `UnlabeledCriterion`, built once from a typed config, with one method per concept of
the paper, in the style of DETR's `SetCriterion` or MMDetection 3's `SoftTeacher`:

- `rpn_loss`: the RPN learns from reliable and uncertain pseudo boxes alike (§3);
- `assign_and_sample`: the student's proposals assigned three ways (reliable-positive /
  uncertain / negative) and sampled (§3);
- `teacher_soft_targets`: the uncertain proposals mapped into the teacher's weak view and
  classified there by the teacher's ROI head on the features it already computed for
  pseudo-labelling (proposal self-assignment, Eq. 7);
- `mine_reliable`: RPLM, which promotes an uncertain box to reliable when the teacher's refined
  boxes and scores agree with it (§4), when `config.rplm.enabled`;
- `self_assignment_loss`: the soft cross-entropy of the uncertain rows RPLM left soft (Eq. 7);
- `reliable_loss`: the hard Fast R-CNN loss on reliable positives, promoted rows and negatives.

Built from torchvision's `RoIHeads` parts (`box_roi_pool`, `box_head`, `box_predictor`,
`box_coder`, `proposal_matcher` thresholds, `fg_bg_sampler` sizes); torchvision is not forked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads

from labelmatch.data.geometry import clip_boxes, map_boxes, stacked
from labelmatch.method import mining
from labelmatch.method.assignment import (
    ProposalKind,
    assign_proposals,
    proposals_by_kind,
    sample_by_kind,
)
from labelmatch.method.losses import soft_cross_entropy
from labelmatch.method.pseudo_labels import PseudoLabels
from labelmatch.method.rows import from_host, segment_ids, segment_starts
from labelmatch.method.teacher import TeacherOutput

UNCERTAIN_MODES = ("self", "ignore", "iou")
UNCERTAIN_METRICS = ("iou", "iof")


def _check_unit_interval(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must lie in [0, 1], got {value!r}")


@dataclass(frozen=True)
class RPLMConfig:
    """`method.rplm` (docs/method.md §4): mining on or off, and its two thresholds (paper Sec.
    4.1, official `reliable_thr`, `reliable_iou`)."""

    enabled: bool = True
    score: float = 0.8  # mean teacher score of the box's class
    iou: float = 0.8  # mean IoU of the teacher-refined boxes with the box

    def __post_init__(self) -> None:
        _check_unit_interval("method.rplm.score", self.score)
        _check_unit_interval("method.rplm.iou", self.iou)


@dataclass(frozen=True)
class UnlabeledCriterionConfig:
    """The unlabeled branch's settings, official defaults (docs/method.md §3-4).

    uncertain: Fig. 6c, "self" (proposal self-assignment), "ignore" (uncertain rows get no loss)
        or "iou" (the module merges uncertain boxes into the reliable ones before this runs).
    uncertain_threshold, uncertain_metric: a proposal joins the uncertain group at overlap >= the
        threshold with an uncertain box, overlap "iou" (official) or "iof".
    teacher_temperature, student_temperature: `method.tpt`, `method.tps` of Eq. 7.
    """

    uncertain: str = "self"
    uncertain_threshold: float = 0.5
    uncertain_metric: str = "iou"
    teacher_temperature: float = 0.5
    student_temperature: float = 1.0
    rplm: RPLMConfig = field(default_factory=RPLMConfig)

    def __post_init__(self) -> None:
        if self.uncertain not in UNCERTAIN_MODES:
            raise ValueError(
                f"method.uncertain must be one of {UNCERTAIN_MODES}, got {self.uncertain!r}"
            )
        if self.uncertain_metric not in UNCERTAIN_METRICS:
            raise ValueError(
                f"method.uncertain_metric must be one of {UNCERTAIN_METRICS}, "
                f"got {self.uncertain_metric!r}"
            )
        _check_unit_interval("method.uncertain_threshold", self.uncertain_threshold)
        for key, value in (("tpt", self.teacher_temperature), ("tps", self.student_temperature)):
            if not value > 0:
                raise ValueError(f"method.{key} must be positive, got {value!r}")


@dataclass
class SampledRois:
    """The ROI samples of the whole batch, rows concatenated over images.

    proposals: per image [M_i,4] (strong frame); labels [M] (0 = background); targets [M,4] the box
    each row regresses to (zeros for negatives); kind [M] (0 neg, 1 pos, 2 uncertain);
    uncertain_box [M] index of the row's uncertain box within its image (-1 otherwise);
    counts: per image, its positive, uncertain and negative rows, which come in that order.
    """

    proposals: list[Tensor]
    labels: Tensor
    targets: Tensor
    kind: Tensor
    uncertain_box: Tensor
    counts: list[tuple[int, int, int]]

    def uncertain_rows(self) -> Tensor:
        """int64[Mu], the uncertain rows in row order, from `counts` (no wait for a GPU)."""
        rows, start = [], 0
        for positive, uncertain, negative in self.counts:
            rows.extend(range(start + positive, start + positive + uncertain))
            start += positive + uncertain + negative
        return from_host(rows, torch.long, self.kind.device)


@dataclass
class TeacherOnUncertain:
    """The teacher's ROI head on the uncertain rows (row order of `SampledRois`, Mu rows).

    logits [Mu, K+1] and regression [Mu, (K+1)·4], the teacher's, no gradient; weak_proposals:
    per image [Mu_i, 4], the rows' proposals in the weak frame; labels: per image [Mu_i], the
    class of each row's uncertain box; box_index: per image [Mu_i], that box's index.
    """

    logits: Tensor
    regression: Tensor
    weak_proposals: list[Tensor]
    labels: list[Tensor]
    box_index: list[Tensor]


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
    candidates_of, assignments = [], []
    for image_proposals, labels in zip(proposals, pseudo):
        candidates = torch.cat([image_proposals, labels.reliable_boxes, labels.uncertain_boxes])
        candidates_of.append(candidates)
        assignments.append(
            assign_proposals(
                candidates,
                labels.reliable_boxes,
                labels.uncertain_boxes,
                fg_iou=fg_iou,
                bg_iou=bg_iou,
                uncertain_threshold=uncertain_threshold,
                uncertain_metric=uncertain_metric,
            )
        )
    # Each kind's proposals found for all images at once; then drawn image by image, in the
    # order (and so from the random stream) of the per-image sampler.
    by_kind = proposals_by_kind([assignment.kind for assignment in assignments])
    rows: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    counts: list[tuple[int, int, int]] = []
    for candidates, labels, assignment, of_kind in zip(candidates_of, pseudo, assignments, by_kind):
        positive, uncertain, negative = sample_by_kind(*of_kind, num_samples, positive_fraction)
        index = torch.cat([positive, uncertain, negative])
        # Rows come as positives, uncertain, negatives, so each kind's rows are a slice.
        reliable_match = assignment.matched_reliable[positive]
        uncertain_match = assignment.matched_uncertain[uncertain]
        no_match = torch.full_like(negative, -1)
        row_labels = torch.cat(
            [
                labels.reliable_labels[reliable_match],
                labels.uncertain_labels[uncertain_match],
                torch.zeros_like(negative),
            ]
        )
        targets = torch.cat(
            [
                labels.reliable_boxes[reliable_match].to(candidates.dtype),
                labels.uncertain_boxes[uncertain_match].to(candidates.dtype),
                candidates.new_zeros(len(negative), 4),
            ]
        )
        uncertain_box = torch.cat([torch.full_like(positive, -1), uncertain_match, no_match])
        counts.append((len(positive), len(uncertain), len(negative)))
        rows.append((candidates[index], row_labels, targets, assignment.kind[index], uncertain_box))
    sampled, labels, targets, kinds, uncertain_boxes = zip(*rows)
    return SampledRois(
        proposals=list(sampled),
        labels=torch.cat(labels),
        targets=torch.cat(targets),
        kind=torch.cat(kinds),
        uncertain_box=torch.cat(uncertain_boxes),
        counts=counts,
    )


class UnlabeledCriterion:
    """L_u on a batch of strong views (docs/method.md §3-4); call it to get (losses, statistics).

    Holds no tensors and no parameters: the student and the teacher are passed in at each call.
    """

    def __init__(self, config: UnlabeledCriterionConfig | None = None) -> None:
        self.config = config if config is not None else UnlabeledCriterionConfig()

    @classmethod
    def from_method_config(cls, method: Mapping[str, Any]) -> UnlabeledCriterion:
        """From the `method` config's keys as users type them: `uncertain`,
        `uncertain_threshold`, `uncertain_metric`, `tpt`, `tps`, `rplm.{enabled,score,iou}`;
        a missing key takes the official default."""
        defaults = UnlabeledCriterionConfig()
        rplm = method.get("rplm") or {}
        return cls(
            UnlabeledCriterionConfig(
                uncertain=method.get("uncertain", defaults.uncertain),
                uncertain_threshold=method.get("uncertain_threshold", defaults.uncertain_threshold),
                uncertain_metric=method.get("uncertain_metric", defaults.uncertain_metric),
                teacher_temperature=method.get("tpt", defaults.teacher_temperature),
                student_temperature=method.get("tps", defaults.student_temperature),
                rplm=RPLMConfig(
                    enabled=bool(rplm.get("enabled", defaults.rplm.enabled)),
                    score=rplm.get("score", defaults.rplm.score),
                    iou=rplm.get("iou", defaults.rplm.iou),
                ),
            )
        )

    def __call__(
        self,
        student: FasterRCNN,
        teacher: FasterRCNN,
        strong_images: list[Tensor],
        pseudo_strong: list[PseudoLabels],
        pseudo_weak: list[PseudoLabels],
        strong_to_weak: Tensor | list[Tensor],
        teacher_out: TeacherOutput,
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """L_u's terms and the step's pseudo-label statistics.

        strong_images: B images [3, H_i, W_i]; `pseudo_strong[i]` and `pseudo_weak[i]` are the
        same pseudo labels in the strong and weak frames; `strong_to_weak` ([B,3,3] or B [3,3]):
        its i-th maps image i's strong-view points into its weak view; `teacher_out` is the
        teacher's pass on the weak views (its features are reused here).
        """
        batched, _ = student.transform(strong_images)
        features = student.backbone(batched.tensors)
        proposals, rpn_losses = self.rpn_loss(student, batched, features, pseudo_strong)

        heads = student.roi_heads
        num_samples = heads.fg_bg_sampler.batch_size_per_image
        rois = self.assign_and_sample(heads, proposals, pseudo_strong)
        pooled = heads.box_roi_pool(features, rois.proposals, batched.image_sizes)
        class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))

        # Uncertain rows stay soft unless RPLM promotes their box (then they are hard, §4).
        uncertain_rows = rois.uncertain_rows()
        promoted_rows = torch.zeros_like(rois.kind, dtype=torch.bool)
        soft_loss = class_logits.sum() * 0.0
        num_mined = 0
        if self.config.uncertain == "self" and len(uncertain_rows) > 0:
            teacher_view = self.teacher_soft_targets(
                teacher, teacher_out, rois, uncertain_rows, strong_to_weak
            )
            if self.config.rplm.enabled:
                promoted, num_mined = self.mine_reliable(
                    teacher, teacher_view, pseudo_weak, teacher_out.image_sizes
                )
            else:
                promoted = torch.zeros(
                    len(teacher_view.logits), dtype=torch.bool, device=teacher_view.logits.device
                )
            promoted_rows[uncertain_rows] = promoted
            soft_loss = self.self_assignment_loss(
                class_logits[uncertain_rows],
                teacher_view.logits,
                promoted,
                normalizer=float(len(strong_images) * num_samples),
            )

        hard_cls, hard_box = self.reliable_loss(
            heads,
            class_logits,
            box_regression,
            rois,
            positive=(rois.kind == ProposalKind.POSITIVE) | promoted_rows,
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

    # ------------------------------------------------------------------------------- RPN
    def rpn_loss(
        self,
        student: FasterRCNN,
        batched: ImageList,
        features: dict[str, Tensor],
        pseudo_strong: list[PseudoLabels],
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The student's proposals (per image [P_i, 4]) and torchvision's RPN losses, with the
        reliable ∪ uncertain boxes as targets (official `gt_bboxes_cmb`, docs/method.md §3)."""
        targets = [
            {
                "boxes": torch.cat([p.reliable_boxes, p.uncertain_boxes]),
                "labels": torch.cat([p.reliable_labels, p.uncertain_labels]),
            }
            for p in pseudo_strong
        ]
        return student.rpn(batched, features, targets)

    # ------------------------------------------------------------------------------- ROI rows
    def assign_and_sample(
        self, heads: RoIHeads, proposals: list[Tensor], pseudo_strong: list[PseudoLabels]
    ) -> SampledRois:
        """Three-way assignment and sampling with the ROI head's matcher thresholds and sampler
        sizes (docs/method.md §3); draws from the global random generator."""
        return sample_rois(
            proposals,
            pseudo_strong,
            num_samples=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            fg_iou=heads.proposal_matcher.high_threshold,
            bg_iou=heads.proposal_matcher.low_threshold,
            uncertain_threshold=self.config.uncertain_threshold,
            uncertain_metric=self.config.uncertain_metric,
        )

    # ------------------------------------------------------------------------------- Eq. 7
    def teacher_soft_targets(
        self,
        teacher: FasterRCNN,
        teacher_out: TeacherOutput,
        rois: SampledRois,
        uncertain_rows: Tensor,
        strong_to_weak: Tensor | list[Tensor],
    ) -> TeacherOnUncertain:
        """Proposal self-assignment (docs/method.md §3, Eq. 7): the uncertain rows' proposals,
        mapped into the weak view (`strong_to_weak`: [B,3,3] or B [3,3]), through the teacher's
        RoIAlign, box head and predictor on the weak-view features of the pseudo-labelling
        pass. uncertain_rows: `rois.uncertain_rows()`, which the caller has already."""
        heads = teacher.roi_heads
        rows = uncertain_rows
        per_image = [uncertain for _, uncertain, _ in rois.counts]
        proposals = torch.cat(rois.proposals)[rows]
        image = segment_ids(per_image, proposals.device)
        weak = map_boxes(proposals, stacked(strong_to_weak).to(proposals)[image])
        weak_proposals = list(weak.split(per_image))
        row_labels = list(rois.labels[rows].split(per_image))
        row_boxes = list(rois.uncertain_box[rows].split(per_image))
        with torch.no_grad():
            pooled = heads.box_roi_pool(
                teacher_out.features, weak_proposals, teacher_out.image_sizes
            )
            logits, regression = heads.box_predictor(heads.box_head(pooled))
        return TeacherOnUncertain(logits, regression, weak_proposals, row_labels, row_boxes)

    def self_assignment_loss(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        promoted: Tensor,
        normalizer: float,
    ) -> Tensor:
        """Eq. 7 on the uncertain rows: student_logits, teacher_logits [Mu, K+1]; promoted [Mu]
        bool, rows RPLM made hard (weight 0, official `1 - mined`); normalizer = images × ROIs
        sampled per image (official avg_factor)."""
        return soft_cross_entropy(
            student_logits,
            teacher_logits,
            weights=(~promoted).float(),
            normalizer=normalizer,
            teacher_temperature=self.config.teacher_temperature,
            student_temperature=self.config.student_temperature,
        )

    # ------------------------------------------------------------------------------- RPLM
    def mine_reliable(
        self,
        teacher: FasterRCNN,
        teacher_view: TeacherOnUncertain,
        pseudo_weak: list[PseudoLabels],
        image_sizes: list[tuple[int, int]],
    ) -> tuple[Tensor, int]:
        """RPLM (docs/method.md §4): which uncertain rows [Mu] bool belong to a box promoted to
        reliable, and how many boxes were promoted. The teacher refines each uncertain proposal;
        per uncertain box, the mean refined-box IoU and mean score of the box's class decide, at
        every step (nothing is remembered per box)."""
        heads = teacher.roi_heads
        num_rows = len(teacher_view.logits)
        refined = heads.box_coder.decode(
            teacher_view.regression, teacher_view.weak_proposals
        ).reshape(num_rows, -1, 4)
        labels = torch.cat(teacher_view.labels)
        device = labels.device
        rows = torch.arange(len(labels), device=device)
        refined_boxes = refined[rows, labels]
        class_scores = F.softmax(teacher_view.logits, dim=-1)[rows, labels]
        # All images at once: row r of image i belongs to box box_index[r] of image i, which is
        # box box_index[r] + (image i's first box) among all images' uncertain boxes.
        image = segment_ids([len(index) for index in teacher_view.box_index], device)
        first_box = segment_starts([len(p.uncertain_boxes) for p in pseudo_weak])
        box_index = (
            torch.cat(teacher_view.box_index) + from_host(first_box, torch.long, device)[image]
        )
        # Refined boxes are clipped to their image, as torchvision's and MMDetection's decoding
        # do.
        sizes = from_host(image_sizes, refined_boxes.dtype, device)[image]
        promoted_boxes = self.promoted_boxes(
            torch.cat([p.uncertain_boxes for p in pseudo_weak]),
            torch.cat([p.uncertain_labels for p in pseudo_weak]),
            box_index,
            clip_boxes(refined_boxes, sizes),
            class_scores,
        )
        return promoted_boxes[box_index], int(promoted_boxes.sum())

    def promoted_boxes(
        self,
        uncertain_boxes: Tensor,
        uncertain_labels: Tensor,
        proposal_box_index: Tensor,
        refined_boxes: Tensor,
        class_scores: Tensor,
    ) -> Tensor:
        """The RPLM decision, bool[U], at `config.rplm`'s thresholds (see
        `labelmatch.method.mining.mine_reliable` for the shapes)."""
        return mining.mine_reliable(
            uncertain_boxes,
            uncertain_labels,
            proposal_box_index,
            refined_boxes,
            class_scores,
            score_threshold=self.config.rplm.score,
            iou_threshold=self.config.rplm.iou,
        )

    # ------------------------------------------------------------------------------- Eq. 8
    def reliable_loss(
        self,
        heads: RoIHeads,
        class_logits: Tensor,
        box_regression: Tensor,
        rois: SampledRois,
        positive: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Hard targets: Fast R-CNN loss on negatives, reliable positives and promoted rows.

        class_logits [M, K+1], box_regression [M, (K+1)·4], positive [M] bool (reliable positives
        and RPLM-promoted uncertain rows); rows of `rois` in the same order.

        Normalised as MMDetection 2.x `BBoxHead.loss`, which the official LabelMatch head calls
        with label weight 1 on positives, negatives and promoted rows and 0 on the other
        uncertain rows (docs/method.md §3-4):
          classification: Σ CE over the hard rows / their number (avg_factor = rows with
                          weight > 0); uncertain rows that stay soft are in neither;
          regression:     Σ smooth-L1 over the positive rows / all sampled rows M (avg_factor =
                          bbox_targets.size(0), the soft uncertain rows included).
        On labeled images every sampled row is positive or negative, so both match torchvision's
        `fastrcnn_loss` there. The regression loss itself is torchvision's (smooth L1, beta 1/9,
        as in the supervised branch), where MMDetection's config has plain L1 (§7).
        """
        hard = (rois.kind == ProposalKind.NEGATIVE) | positive  # rois.labels is 0 on negatives
        num_hard = max(int(hard.sum()), 1)
        cls_loss = (
            F.cross_entropy(class_logits[hard], rois.labels[hard], reduction="sum") / num_hard
        )

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
