import pytest
import torch
from torchvision.ops import box_iou

from labelmatch.method.assignment import (
    ProposalKind,
    assign_proposals,
    box_iof,
    proposals_by_kind,
    sample_proposals,
)

NEG, POS, UNC, IGN = (
    int(k)
    for k in (
        ProposalKind.NEGATIVE,
        ProposalKind.POSITIVE,
        ProposalKind.UNCERTAIN,
        ProposalKind.IGNORED,
    )
)
RELIABLE = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
UNCERTAIN = torch.tensor([[20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]])
PROPOSALS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 8.0],  # IoU with reliable 80/100 = 0.8          -> positive
        [25.0, 0.0, 35.0, 10.0],  # with uncertain 0: IoU 50/150 = 1/3, IoF 50/100 = 0.5
        [60.0, 0.0, 70.0, 10.0],  # touches nothing                          -> negative
        [0.0, 0.0, 10.0, 4.0],  # IoU with reliable 40/100 = 0.4            -> between thresholds
        [42.0, 0.0, 52.0, 10.0],  # with uncertain 1: IoU 80/120 = 0.67, IoF 0.8 -> uncertain
    ]
)


def test_box_iof_divides_by_the_first_box_area():
    small, big, shifted = [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]
    iof = box_iof(torch.tensor([small, big]), torch.tensor([small, big, shifted]))
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.04, 1.0, 0.5]])
    torch.testing.assert_close(iof, expected)
    degenerate = box_iof(torch.tensor([[3.0, 3.0, 3.0, 3.0]]), torch.tensor([big]))
    assert degenerate.item() == 0.0


def test_one_proposal_of_each_kind_with_hand_computed_overlaps():
    # Official overlap (IoU, docs/method.md §3) with a gap between bg 0.3 and fg 0.5.
    # Proposal 1 has IoU 50/150 = 1/3 with uncertain box 0: below the uncertain threshold 0.5 but
    # not below bg 0.3, so the official second assigner run leaves it at -1: ignored, not negative.
    result = assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN, fg_iou=0.5, bg_iou=0.3)
    assert result.kind.tolist() == [POS, IGN, NEG, IGN, UNC]  # proposal 4: IoU 80/120 = 0.67
    assert result.matched_reliable.tolist() == [0, -1, -1, -1, -1]
    assert result.matched_uncertain.tolist() == [-1, -1, -1, -1, 1]
    assert result.kind.dtype == torch.long


def test_iof_metric_is_kept_as_an_option():
    # IoF (the default before the official IoU was restored): proposal 1 covers its uncertain box
    # by 50/100 = 0.5 of its own area -> uncertain.
    result = assign_proposals(
        PROPOSALS, RELIABLE, UNCERTAIN, fg_iou=0.5, bg_iou=0.3, uncertain_metric="iof"
    )
    assert result.kind.tolist() == [POS, UNC, NEG, IGN, UNC]
    assert result.matched_uncertain.tolist() == [-1, 0, -1, -1, 1]
    # Under IoF a negative still needs IoU < bg with the uncertain boxes: with the IoF threshold
    # raised to 0.9 proposal 1 is not uncertain, and its IoU 1/3 >= bg 0.3 keeps it ignored.
    strict = assign_proposals(
        PROPOSALS, RELIABLE, UNCERTAIN, 0.5, 0.3, uncertain_threshold=0.9, uncertain_metric="iof"
    )
    assert strict.kind.tolist() == [POS, IGN, NEG, IGN, IGN]  # proposal 4: IoF 0.8, IoU 0.67
    with pytest.raises(ValueError, match="uncertain_metric"):
        assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN, uncertain_metric="giou")


def test_official_thresholds_leave_no_gap_between_positive_and_negative():
    # Defaults: fg = bg = uncertain threshold = 0.5, IoU (official MaxIoUAssignerLM). Proposal 1
    # (IoU 1/3 with an uncertain box) and proposal 3 (IoU 0.4 with the reliable box) are negative.
    # Under the former IoF default proposal 1 was uncertain; the official code computes IoU.
    result = assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN)
    assert result.kind.tolist() == [POS, NEG, NEG, NEG, UNC]


def test_an_iou_of_exactly_one_half_is_positive_or_uncertain_never_negative():
    # Official MaxIoUAssignerLM: pos_iou_thr 0.5 and the uncertain threshold are inclusive (>=),
    # neg_iou_thr exclusive (<). IoU 50/100 = 0.5 exactly in float32.
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 with the reliable box      -> positive
            [20.0, 0.0, 30.0, 5.0],  # IoU 0.5 with uncertain box 0      -> uncertain
            [20.0, 0.0, 30.0, 4.9],  # IoU 0.49 with it, 0 with the rest -> negative
        ]
    )
    assert box_iou(proposals[:2], torch.cat([RELIABLE, UNCERTAIN[:1]])).diagonal().tolist() == [
        0.5,
        0.5,
    ]
    result = assign_proposals(proposals, RELIABLE, UNCERTAIN)
    assert result.kind.tolist() == [POS, UNC, NEG]
    assert result.matched_reliable.tolist() == [0, -1, -1]
    assert result.matched_uncertain.tolist() == [-1, 0, -1]


def test_negative_needs_low_iou_with_uncertain_boxes_too():
    # A proposal far from every reliable box, IoU 0.4 with an uncertain box, bg 0.3 < fg 0.5:
    # the official assigner's uncertain run gives -1 (0.3 <= 0.4 < 0.5), so it is neither
    # uncertain nor negative. Box [0, 0, 10, 4] inside [0, 0, 10, 10]: IoU 40/100 = 0.4.
    proposal = torch.tensor([[0.0, 0.0, 10.0, 4.0]])
    far_reliable = torch.tensor([[100.0, 100.0, 110.0, 110.0]])
    uncertain = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gap = assign_proposals(proposal, far_reliable, uncertain, fg_iou=0.5, bg_iou=0.3)
    assert gap.kind.tolist() == [IGN]
    # With bg 0.5 (official) the same proposal is a negative: IoU < 0.5 with every box.
    assert assign_proposals(proposal, far_reliable, uncertain).kind.tolist() == [NEG]
    # bg 0.45 > 0.4: negative again.
    assert assign_proposals(proposal, far_reliable, uncertain, 0.5, 0.45).kind.tolist() == [NEG]


def _official_kinds(proposals, reliable, uncertain, pos_thr: float, neg_thr: float) -> list[int]:
    """What the official RandomSamplerLM.sample_ig would draw each proposal as (its exclusive
    variant): two MaxIoUAssigner runs (gt_inds -1 ignore / 0 negative / > 0 positive), positive
    from the reliable run, uncertain = (reliable run <= 0) & (uncertain run > 0), negative =
    both runs 0."""

    def gt_inds(boxes):
        inds = torch.full((len(proposals),), -1)
        if len(boxes) == 0:
            return torch.zeros(len(proposals), dtype=torch.long)
        best, arg = box_iou(boxes, proposals).max(dim=0)
        inds[best < neg_thr] = 0
        inds[best >= pos_thr] = arg[best >= pos_thr] + 1
        return inds

    pos, ig = gt_inds(reliable), gt_inds(uncertain)
    kinds = torch.full((len(proposals),), IGN)
    kinds[(pos == 0) & (ig == 0)] = NEG
    kinds[(pos <= 0) & (ig > 0)] = UNC
    kinds[pos > 0] = POS
    return kinds.tolist()


@pytest.mark.parametrize("neg_thr", [0.5, 0.3])
def test_matches_two_official_assigner_runs_on_random_boxes(neg_thr):
    generator = torch.Generator().manual_seed(0)

    def boxes(n):
        corner = torch.rand(n, 2, generator=generator) * 60
        size = 5 + torch.rand(n, 2, generator=generator) * 30
        return torch.cat([corner, corner + size], dim=1)

    proposals, reliable, uncertain = boxes(400), boxes(4), boxes(6)
    result = assign_proposals(proposals, reliable, uncertain, fg_iou=0.5, bg_iou=neg_thr)
    expected = _official_kinds(proposals, reliable, uncertain, 0.5, neg_thr)
    assert result.kind.tolist() == expected
    assert len(set(expected)) == (3 if neg_thr == 0.5 else 4)  # every kind occurs


def test_positive_wins_over_uncertain_and_uncertain_over_ignored():
    uncertain_on_reliable = RELIABLE.clone()
    result = assign_proposals(PROPOSALS[[0, 3]], RELIABLE, uncertain_on_reliable, bg_iou=0.3)
    # proposal 0: IoU 0.8 with reliable -> positive even though it is 0.8 with the uncertain box;
    # proposal 3: IoU 0.4 with both (between bg and the thresholds) -> ignored.
    assert result.kind.tolist() == [POS, IGN]
    # Under IoF proposal 3 covers the uncertain box by 1.0 of its area -> uncertain.
    iof = assign_proposals(
        PROPOSALS[[0, 3]], RELIABLE, uncertain_on_reliable, bg_iou=0.3, uncertain_metric="iof"
    )
    assert iof.kind.tolist() == [POS, UNC]
    assert iof.matched_uncertain.tolist() == [-1, 0]


def test_empty_box_sets_and_empty_proposals():
    none = torch.zeros(0, 4)
    no_boxes = assign_proposals(PROPOSALS, none, none)
    assert no_boxes.kind.tolist() == [NEG] * 5
    assert no_boxes.matched_reliable.tolist() == [-1] * 5
    assert no_boxes.matched_uncertain.tolist() == [-1] * 5

    only_uncertain = assign_proposals(PROPOSALS, none, UNCERTAIN)
    assert only_uncertain.kind.tolist() == [NEG, NEG, NEG, NEG, UNC]

    only_reliable = assign_proposals(PROPOSALS, RELIABLE, none, bg_iou=0.3)
    assert only_reliable.kind.tolist() == [POS, NEG, NEG, IGN, NEG]

    no_proposals = assign_proposals(none, RELIABLE, UNCERTAIN)
    assert no_proposals.kind.shape == (0,) and no_proposals.matched_uncertain.shape == (0,)
    assert assign_proposals(none, none, none).kind.shape == (0,)


def _kinds(pos: int, unc: int, neg: int, ign: int = 0) -> torch.Tensor:
    return torch.tensor([POS] * pos + [UNC] * unc + [NEG] * neg + [IGN] * ign)


def _check_groups(kind, positives, uncertain, negatives):
    assert (kind[positives] == POS).all()
    assert (kind[uncertain] == UNC).all()
    assert (kind[negatives] == NEG).all()
    for group in (positives, uncertain, negatives):
        assert group.unique().numel() == group.numel()


def test_sampling_fills_positive_quota_with_positives_first():
    kind = _kinds(pos=5, unc=3, neg=100, ign=10)
    positives, uncertain, negatives = sample_proposals(kind, num_samples=16, positive_fraction=0.25)
    assert (positives.numel(), uncertain.numel(), negatives.numel()) == (4, 0, 12)
    _check_groups(kind, positives, uncertain, negatives)


def test_sampling_floors_a_fractional_positive_quota():
    # 6 samples x 0.25 = 1.5 positives: int(1.5) = 1 (torchvision's and MMDetection's samplers
    # truncate), the other 5 negatives.
    kind = _kinds(pos=5, unc=0, neg=100)
    positives, uncertain, negatives = sample_proposals(kind, num_samples=6, positive_fraction=0.25)
    assert (positives.numel(), uncertain.numel(), negatives.numel()) == (1, 0, 5)


def test_sampling_draws_uncertain_from_what_is_left_of_the_quota():
    kind = _kinds(pos=1, unc=10, neg=100)
    positives, uncertain, negatives = sample_proposals(kind, num_samples=16, positive_fraction=0.25)
    assert (positives.numel(), uncertain.numel(), negatives.numel()) == (1, 3, 12)
    _check_groups(kind, positives, uncertain, negatives)


def test_sampling_takes_everything_when_groups_are_short():
    kind = _kinds(pos=1, unc=1, neg=5, ign=4)
    positives, uncertain, negatives = sample_proposals(kind, num_samples=16, positive_fraction=0.25)
    assert positives.tolist() == [0] and uncertain.tolist() == [1]
    assert negatives.tolist() == [2, 3, 4, 5, 6]
    empty = sample_proposals(torch.zeros(0, dtype=torch.long))
    assert all(group.numel() == 0 for group in empty)


def test_sampling_is_random_without_replacement_and_reproducible():
    kind = _kinds(pos=0, unc=0, neg=100)
    first = sample_proposals(kind, 16, 0.25, generator=torch.Generator().manual_seed(3))
    again = sample_proposals(kind, 16, 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[2], again[2])
    generator = torch.Generator().manual_seed(0)
    seen = torch.cat([sample_proposals(kind, 16, 0.25, generator=generator)[2] for _ in range(10)])
    assert seen.unique().numel() > 16  # not always the same 16 negatives


def test_sampling_rejects_bad_fraction():
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_proposals(_kinds(1, 1, 1), num_samples=8, positive_fraction=1.5)


def test_proposals_by_kind_indexes_each_images_own_proposals():
    """Three images at once, hand-computed: each kind's indices within its own image, in
    ascending order; ignored proposals in none; an image without proposals gets empty ones."""
    kinds = [
        torch.tensor([NEG, POS, IGN, UNC, POS, NEG]),
        torch.zeros(0, dtype=torch.long),
        torch.tensor([UNC, NEG, UNC]),
    ]
    by_kind = proposals_by_kind(kinds)
    assert [[group.tolist() for group in image] for image in by_kind] == [
        [[1, 4], [3], [0, 5]],
        [[], [], []],
        [[], [0, 2], [1]],
    ]
    assert by_kind[0][0].dtype == torch.long and proposals_by_kind([]) == []
