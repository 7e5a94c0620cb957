import pytest
import torch

from labelmatch.method.mining import mine_reliable

UNCERTAIN_BOXES = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # 0: good IoU, good score -> promoted
        [20.0, 0.0, 30.0, 10.0],  # 1: IoU 1 and 0.5 -> mean 0.75 < 0.8
        [40.0, 0.0, 50.0, 10.0],  # 2: IoU 1, scores 1.0 and 0.5 -> mean 0.75 < 0.8
        [60.0, 0.0, 70.0, 10.0],  # 3: no proposals
    ]
)
UNCERTAIN_LABELS = torch.tensor([1, 2, 3, 1])
# Proposals interleaved across boxes, so the per-box means need a real scatter.
BOX_INDEX = torch.tensor([1, 0, 2, 0, 1, 2])
REFINED = torch.tensor(
    [
        [20.0, 0.0, 30.0, 10.0],  # box 1, IoU 1
        [0.0, 0.0, 10.0, 10.0],  # box 0, IoU 1
        [40.0, 0.0, 50.0, 10.0],  # box 2, IoU 1
        [0.0, 0.0, 10.0, 9.0],  # box 0, IoU 0.9
        [20.0, 0.0, 30.0, 5.0],  # box 1, IoU 0.5
        [40.0, 0.0, 50.0, 10.0],  # box 2, IoU 1
    ]
)
SCORES = torch.tensor([1.0, 0.9, 1.0, 0.8, 0.5, 0.5])  # box means: 0 -> 0.85, 1 -> 0.75, 2 -> 0.75


def test_promotes_only_boxes_passing_both_means():
    promoted = mine_reliable(UNCERTAIN_BOXES, UNCERTAIN_LABELS, BOX_INDEX, REFINED, SCORES)
    assert promoted.tolist() == [True, False, False, False]
    assert promoted.dtype == torch.bool


def test_thresholds_are_inclusive_and_each_gate_matters():
    # Boxes 1 and 2 sit exactly at 0.75: box 1 on both means, box 2 on the score only.
    loose_score = mine_reliable(
        UNCERTAIN_BOXES,
        UNCERTAIN_LABELS,
        BOX_INDEX,
        REFINED,
        SCORES,
        score_threshold=0.75,
        iou_threshold=0.8,
    )
    assert loose_score.tolist() == [True, False, True, False]  # box 1 still fails IoU
    loose_iou = mine_reliable(
        UNCERTAIN_BOXES,
        UNCERTAIN_LABELS,
        BOX_INDEX,
        REFINED,
        SCORES,
        score_threshold=0.8,
        iou_threshold=0.75,
    )
    assert loose_iou.tolist() == [True, False, False, False]  # box 1 now fails the score
    both_loose = mine_reliable(
        UNCERTAIN_BOXES,
        UNCERTAIN_LABELS,
        BOX_INDEX,
        REFINED,
        SCORES,
        score_threshold=0.75,
        iou_threshold=0.75,
    )
    assert both_loose.tolist() == [True, True, True, False]  # box 3 never: no proposals


def test_gathers_the_box_class_from_full_teacher_distribution():
    # K = 4 columns (background + 3 classes); each row's box class column holds SCORES.
    full = torch.zeros(len(SCORES), 4)
    box_class = UNCERTAIN_LABELS[BOX_INDEX]
    full[torch.arange(len(SCORES)), box_class] = SCORES
    full[:, 0] = 1.0 - SCORES  # a background column that must not be read
    promoted = mine_reliable(UNCERTAIN_BOXES, UNCERTAIN_LABELS, BOX_INDEX, REFINED, full)
    assert promoted.tolist() == [True, False, False, False]


def test_no_proposals_and_no_boxes():
    none = mine_reliable(
        UNCERTAIN_BOXES,
        UNCERTAIN_LABELS,
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 4),
        torch.zeros(0),
    )
    assert none.tolist() == [False] * 4
    empty = mine_reliable(
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 4),
        torch.zeros(0),
    )
    assert empty.shape == (0,)


def test_the_default_thresholds_are_the_papers_0_8():
    # Refined box [0, 0, 10, 7.5] in box [0, 0, 10, 10]: IoU 75 / 100 = 0.75, under 0.8.
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    refined = torch.tensor([[0.0, 0.0, 10.0, 7.5]])
    args = (box, torch.tensor([1]), torch.tensor([0]), refined, torch.tensor([0.9]))
    assert mine_reliable(*args).tolist() == [False]
    assert mine_reliable(*args, iou_threshold=0.75).tolist() == [True]
    assert mine_reliable(*args, score_threshold=0.95, iou_threshold=0.75).tolist() == [False]


def test_a_box_without_proposals_is_never_promoted_even_at_zero_thresholds():
    # Thresholds 0 let any mean pass; box 1 has no proposal, so no mean: it stays uncertain.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    promoted = mine_reliable(
        boxes, torch.tensor([1, 1]), torch.tensor([0]), boxes[:1], torch.tensor([0.9]),
        score_threshold=0.0, iou_threshold=0.0,
    )  # fmt: skip
    assert promoted.tolist() == [True, False]


def test_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="0..3"):
        mine_reliable(UNCERTAIN_BOXES, UNCERTAIN_LABELS, BOX_INDEX + 2, REFINED, SCORES)
    with pytest.raises(ValueError, match="M = 6"):
        mine_reliable(UNCERTAIN_BOXES, UNCERTAIN_LABELS, BOX_INDEX, REFINED[:5], SCORES)
    with pytest.raises(ValueError, match="uncertain labels"):
        mine_reliable(UNCERTAIN_BOXES, UNCERTAIN_LABELS[:3], BOX_INDEX, REFINED, SCORES)


def test_teacher_outputs_in_half_precision_are_mined_in_float32():
    """Under bf16 / fp16 autocast the teacher's refined boxes and scores come in half precision
    beside float32 uncertain boxes (a RuntimeError in index_add_ before): same decisions. The
    fixture's coordinates are exact in both; its scores round (0.9 -> 0.898, 0.8 -> 0.801 in
    bf16), box 0's mean stays 0.85 ± 0.01."""
    for dtype in (torch.bfloat16, torch.float16):
        promoted = mine_reliable(
            UNCERTAIN_BOXES, UNCERTAIN_LABELS, BOX_INDEX, REFINED.to(dtype), SCORES.to(dtype)
        )
        assert promoted.tolist() == [True, False, False, False], dtype
