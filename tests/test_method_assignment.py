import pytest
import torch

from labelmatch.method.assignment import (
    ProposalKind,
    assign_proposals,
    box_iof,
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
        [25.0, 0.0, 35.0, 10.0],  # IoF with uncertain 0: 50/100 = 0.5 (IoU 1/3) -> uncertain
        [60.0, 0.0, 70.0, 10.0],  # touches nothing                          -> negative
        [0.0, 0.0, 10.0, 4.0],  # IoU with reliable 40/100 = 0.4            -> between thresholds
        [42.0, 0.0, 52.0, 10.0],  # IoF with uncertain 1: 80/100 = 0.8        -> uncertain, box 1
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
    result = assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN, fg_iou=0.5, bg_iou=0.3)
    assert result.kind.tolist() == [POS, UNC, NEG, IGN, UNC]
    assert result.matched_reliable.tolist() == [0, -1, -1, -1, -1]
    assert result.matched_uncertain.tolist() == [-1, 0, -1, -1, 1]
    assert result.kind.dtype == torch.long


def test_official_thresholds_leave_no_gap_between_positive_and_negative():
    result = assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN)  # fg = bg = 0.5
    assert result.kind.tolist() == [POS, UNC, NEG, NEG, UNC]


def test_iou_metric_for_uncertain_boxes():
    # proposal 1 has IoU 1/3 with its uncertain box: not uncertain under IoU, so negative.
    result = assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN, uncertain_metric="iou")
    assert result.kind.tolist() == [POS, NEG, NEG, NEG, UNC]  # proposal 4: IoU 80/120 = 0.67
    with pytest.raises(ValueError, match="uncertain_metric"):
        assign_proposals(PROPOSALS, RELIABLE, UNCERTAIN, uncertain_metric="giou")


def test_positive_wins_over_uncertain_and_uncertain_over_ignored():
    uncertain_on_reliable = RELIABLE.clone()
    result = assign_proposals(PROPOSALS[[0, 3]], RELIABLE, uncertain_on_reliable, bg_iou=0.3)
    # proposal 0: IoU 0.8 with reliable -> positive even though its IoF with the uncertain box is 1;
    # proposal 3: IoU 0.4 (between thresholds) but IoF 1.0 with the uncertain box -> uncertain.
    assert result.kind.tolist() == [POS, UNC]
    assert result.matched_uncertain.tolist() == [-1, 0]


def test_empty_box_sets_and_empty_proposals():
    none = torch.zeros(0, 4)
    no_boxes = assign_proposals(PROPOSALS, none, none)
    assert no_boxes.kind.tolist() == [NEG] * 5
    assert no_boxes.matched_reliable.tolist() == [-1] * 5
    assert no_boxes.matched_uncertain.tolist() == [-1] * 5

    only_uncertain = assign_proposals(PROPOSALS, none, UNCERTAIN)
    assert only_uncertain.kind.tolist() == [NEG, UNC, NEG, NEG, UNC]

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
