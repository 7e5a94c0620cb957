"""Three-way assignment of the student's proposals (paper Sec. 3.3, docs/method.md §3).

Each proposal of the strong view is
  POSITIVE  — IoU ≥ fg_iou with a reliable box: hard class + box regression, as supervised;
  UNCERTAIN — else IoU ≥ uncertain_threshold (0.5) with an uncertain box: soft target from the
              teacher's ROI head (Eq. 7);
  NEGATIVE  — else IoU < bg_iou with every reliable AND every uncertain box: background;
  IGNORED   — else (an IoU in [bg_iou, fg_iou) with some box): no loss.
ROI sampling then draws the uncertain group from the positive quota (official `RandomSamplerLM`).

This is what the official ROI head computes (docs/method.md §3): it runs the same
`MaxIoUAssignerLM` (pos_iou_thr = neg_iou_thr = 0.5) twice, once with the reliable and once with
the uncertain boxes as ground truth; a proposal is uncertain when the second run makes it
positive, and negative only when both runs make it negative. The config's `ignore_iof_thr` is
never read (`None` is passed in the ignore slot), so IoF plays no part; `uncertain_metric="iof"`
(intersection over the proposal's area) is kept as a non-official option.

Two corner cases differ from the official sampler, on purpose: a proposal that is positive for a
reliable box and also ≥ 0.5 IoU with an uncertain box is only positive here, whereas the official
sampler draws from both pools independently, so it can appear twice (once hard, once soft); and an
uncertain pseudo box added as a proposal is positive here when it overlaps a reliable box by
≥ fg_iou, whereas the official marks it "ignore" for the reliable run, so it is only uncertain.

The Fig. 6c ablation maps onto this module as follows:
  uncertain = "self"   — the method: uncertain proposals get the soft loss of Eq. 7;
  uncertain = "ignore" — same assignment and sampling, but the uncertain group gets no loss
                         (neither positive nor negative);
  uncertain = "iou"    — uncertain boxes are appended to the reliable boxes before calling
                         `assign_proposals` (with none left uncertain): plain hard IoU assignment.
"""

from collections.abc import Sequence
from enum import IntEnum
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_area, box_iou

from labelmatch.method.rows import from_host, grouped_rows, segment_ids, segment_starts


class ProposalKind(IntEnum):
    IGNORED = -1
    NEGATIVE = 0
    POSITIVE = 1
    UNCERTAIN = 2


class ProposalAssignment(NamedTuple):
    """kind: int64[P] of ProposalKind; matched_reliable / matched_uncertain: int64[P], the
    index of the matched box, −1 where the proposal is not of that kind."""

    kind: Tensor
    matched_reliable: Tensor
    matched_uncertain: Tensor


def box_iof(boxes: Tensor, regions: Tensor, eps: float = 1e-6) -> Tensor:
    """Intersection over the area of `boxes` (MMDetection's `iof` mode), float[N, M].

    boxes: [N, 4], regions: [M, 4], both (x1, y1, x2, y2). The area is floored at eps
    as in MMDetection, so degenerate proposals give 0 rather than NaN.
    """
    top_left = torch.max(boxes[:, None, :2], regions[None, :, :2])
    bottom_right = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return intersection / box_area(boxes).clamp(min=eps)[:, None]


def _best_match(overlaps: Tensor) -> tuple[Tensor, Tensor]:
    """Max overlap and its column per row of [P, B]; zeros / −1 when B = 0."""
    if overlaps.shape[1] == 0:
        no_match = torch.full((overlaps.shape[0],), -1, dtype=torch.long, device=overlaps.device)
        return overlaps.new_zeros(overlaps.shape[0]), no_match
    return overlaps.max(dim=1)


def assign_proposals(
    proposals: Tensor,
    reliable_boxes: Tensor,
    uncertain_boxes: Tensor,
    fg_iou: float = 0.5,
    bg_iou: float = 0.5,
    uncertain_threshold: float = 0.5,
    *,
    uncertain_metric: Literal["iou", "iof"] = "iou",
) -> ProposalAssignment:
    """Assigns proposals [P, 4] to reliable [R, 4] and uncertain [U, 4] boxes (any may be empty).

    Precedence: positive (max IoU with reliable ≥ fg_iou) > uncertain (max overlap with an
    uncertain box ≥ uncertain_threshold, matched to the box of max overlap) > negative (max IoU
    with every reliable and every uncertain box < bg_iou) > ignored. Official ROI defaults:
    fg = bg = uncertain_threshold = 0.5, overlap IoU (docs/method.md §3); then every proposal is
    one of positive / uncertain / negative. With bg_iou < fg_iou, a proposal whose IoU with an
    uncertain box lies in [bg_iou, uncertain_threshold) is ignored, as the official second
    assigner run leaves it at −1 ("neither"), not negative.
    `uncertain_metric="iof"` (non-official) measures the uncertain overlap as intersection over
    the proposal's area instead; negatives still need IoU < bg_iou with the uncertain boxes.
    """
    if uncertain_metric not in ("iof", "iou"):
        raise ValueError(f"uncertain_metric must be 'iou' or 'iof', got {uncertain_metric!r}")
    max_iou, best_reliable = _best_match(box_iou(proposals, reliable_boxes))
    uncertain_iou = box_iou(proposals, uncertain_boxes)
    max_uncertain_iou, _ = _best_match(uncertain_iou)
    overlap = box_iof(proposals, uncertain_boxes) if uncertain_metric == "iof" else uncertain_iou
    max_overlap, best_uncertain = _best_match(overlap)

    positive = max_iou >= fg_iou
    uncertain = ~positive & (max_overlap >= uncertain_threshold) & (best_uncertain >= 0)
    negative = ~positive & ~uncertain & (max_iou < bg_iou) & (max_uncertain_iou < bg_iou)

    # Selections, not boolean-mask writes: a mask write waits for a GPU (it counts the rows).
    kind = torch.where(positive, int(ProposalKind.POSITIVE), int(ProposalKind.IGNORED))
    kind = torch.where(uncertain, int(ProposalKind.UNCERTAIN), kind)
    kind = torch.where(negative, int(ProposalKind.NEGATIVE), kind)
    matched_reliable = torch.where(positive, best_reliable, -1)
    matched_uncertain = torch.where(uncertain, best_uncertain, -1)
    return ProposalAssignment(kind, matched_reliable, matched_uncertain)


def _random_subset(indices: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """At most `count` of `indices`, drawn without replacement; all of them if too few."""
    if indices.numel() <= count:
        return indices
    device = generator.device if generator is not None else indices.device
    order = torch.randperm(indices.numel(), generator=generator, device=device)
    return indices[order[:count].to(indices.device)]


def proposals_by_kind(kinds: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image, the indices int64 of its positive, uncertain and negative proposals, each in
    ascending order (what `torch.nonzero(kind == k)` gives), from `kinds`, per image int64[P_i]
    of ProposalKind: for all images at once, with one wait for a GPU instead of three per image."""
    if not kinds:
        return []
    kind = torch.cat(list(kinds))
    image = segment_ids([len(k) for k in kinds], kind.device)
    # Slots 0, 1, 2: positive, uncertain, negative; 3: ignored, never drawn.
    slot = torch.where(kind == ProposalKind.POSITIVE, 0, 3)
    slot = torch.where(kind == ProposalKind.UNCERTAIN, 1, slot)
    slot = torch.where(kind == ProposalKind.NEGATIVE, 2, slot)
    order, sizes = grouped_rows(4 * image + slot, 4 * len(kinds))
    starts = from_host(segment_starts([len(k) for k in kinds]), torch.long, kind.device)
    local = order - starts[image[order]]
    groups = local.split(sizes)
    return [(groups[4 * i], groups[4 * i + 1], groups[4 * i + 2]) for i in range(len(kinds))]


def sample_proposals(
    kind: Tensor,
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (positives, uncertain, negatives), int64, into `kind` (int64[P]): `sample_by_kind`
    on the proposals of each kind."""
    ((positives, uncertain, negatives),) = proposals_by_kind([kind])
    return sample_by_kind(
        positives, uncertain, negatives, num_samples, positive_fraction, generator
    )


def sample_by_kind(
    positives: Tensor,
    uncertain: Tensor,
    negatives: Tensor,
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The sampled (positives, uncertain, negatives), int64, from the indices of one image's
    proposals of each kind (`proposals_by_kind`).

    Official `RandomSamplerLM.sample_pos_ig`, 512 ROIs and 25 % positive per image: the
    positive quota int(num_samples · positive_fraction) is filled by positives first, what is
    left of it by uncertain proposals, and negatives fill num_samples − (#pos + #uncertain).
    Ignored proposals are never drawn.
    """
    if num_samples < 0 or not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(
            f"need num_samples >= 0 and positive_fraction in [0, 1], "
            f"got {num_samples} and {positive_fraction}"
        )
    quota = int(num_samples * positive_fraction)
    positives = _random_subset(positives, quota, generator)
    uncertain = _random_subset(uncertain, quota - positives.numel(), generator)
    num_negatives = num_samples - positives.numel() - uncertain.numel()
    negatives = _random_subset(negatives, num_negatives, generator)
    return positives, uncertain, negatives
