"""Threshold split of teacher detections and the move of pseudo labels between views (spec §3)."""

import pytest
import torch

from labelmatch.data.geometry import flip_matrix, scale_matrix
from labelmatch.method.pseudo_labels import (
    PseudoLabels,
    map_pseudo_labels,
    merge_uncertain_into_reliable,
    split_batch_by_thresholds,
    split_by_thresholds,
)

# Class 1: t_r = 0.7, t_u = 0.3; class 2: t_r = 0.5, t_u = 0.2.
RELIABLE_THRESHOLDS = torch.tensor([0.7, 0.5])
UNCERTAIN_THRESHOLDS = torch.tensor([0.3, 0.2])


def _detections(scores_and_labels: list[tuple[float, int]]):
    """One distinct box per detection (box i is [i, i, i + 10, i + 10]) so rows are traceable."""
    n = len(scores_and_labels)
    offsets = torch.arange(n, dtype=torch.float32)[:, None]
    boxes = torch.cat([offsets, offsets, offsets + 10, offsets + 10], dim=1)
    scores = torch.tensor([s for s, _ in scores_and_labels])
    labels = torch.tensor([c for _, c in scores_and_labels])
    return boxes, scores, labels


def test_split_uses_each_class_thresholds_with_inclusive_lower_bounds():
    boxes, scores, labels = _detections(
        [
            (0.7, 1),  # 0: = t_r[1] -> reliable
            (0.69, 1),  # 1: uncertain
            (0.3, 1),  # 2: = t_u[1] -> uncertain
            (0.29, 1),  # 3: dropped
            (0.6, 1),  # 4: uncertain for class 1 ...
            (0.6, 2),  # 5: ... but reliable for class 2
            (0.5, 2),  # 6: = t_r[2] -> reliable
            (0.2, 2),  # 7: = t_u[2] -> uncertain
            (0.19, 2),  # 8: dropped
        ]
    )
    pseudo = split_by_thresholds(boxes, scores, labels, RELIABLE_THRESHOLDS, UNCERTAIN_THRESHOLDS)

    torch.testing.assert_close(pseudo.reliable_boxes, boxes[[0, 5, 6]])
    assert pseudo.reliable_labels.tolist() == [1, 2, 2]
    torch.testing.assert_close(pseudo.uncertain_boxes, boxes[[1, 2, 4, 7]])
    assert pseudo.uncertain_labels.tolist() == [1, 1, 1, 2]
    torch.testing.assert_close(pseudo.uncertain_scores, torch.tensor([0.69, 0.3, 0.6, 0.2]))


def test_split_of_no_detections_is_empty_with_box_shapes():
    boxes, scores, labels = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    pseudo = split_by_thresholds(boxes, scores, labels, RELIABLE_THRESHOLDS, UNCERTAIN_THRESHOLDS)
    assert pseudo.reliable_boxes.shape == (0, 4) and pseudo.uncertain_boxes.shape == (0, 4)
    assert len(pseudo.reliable_labels) == len(pseudo.uncertain_scores) == 0


def _weak_to_strong_flip_and_double() -> torch.Tensor:
    """Weak view 100 wide x 80 high; strong view = flip, then 2x: (x, y) -> (2(100 - x), 2y)."""
    return scale_matrix(2.0, 2.0) @ flip_matrix(100.0)


def test_map_flips_and_scales_boxes_exactly():
    pseudo = PseudoLabels(
        reliable_boxes=torch.tensor([[10.0, 20.0, 30.0, 40.0]]),
        reliable_labels=torch.tensor([3]),
        uncertain_boxes=torch.tensor([[90.0, 0.0, 100.0, 10.0], [0.0, 70.0, 50.0, 80.0]]),
        uncertain_labels=torch.tensor([1, 2]),
        uncertain_scores=torch.tensor([0.4, 0.5]),
    )
    strong = pseudo.map(_weak_to_strong_flip_and_double(), image_size=(160, 200))

    torch.testing.assert_close(strong.reliable_boxes, torch.tensor([[140.0, 40.0, 180.0, 80.0]]))
    torch.testing.assert_close(
        strong.uncertain_boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0], [100.0, 140.0, 200.0, 160.0]])
    )
    assert strong.reliable_labels.tolist() == [3]
    assert strong.uncertain_labels.tolist() == [1, 2]
    torch.testing.assert_close(strong.uncertain_scores, torch.tensor([0.4, 0.5]))


def test_map_clips_to_the_view_and_drops_boxes_left_without_area():
    pseudo = PseudoLabels(
        # Row 0 sticks out below and left of the weak view; row 1 lies wholly right of it.
        reliable_boxes=torch.tensor([[-10.0, 70.0, 20.0, 90.0], [110.0, 0.0, 120.0, 10.0]]),
        reliable_labels=torch.tensor([1, 2]),
        # Row 0 lies wholly outside (x > 100) and is dropped; row 1 is kept with its label/score.
        uncertain_boxes=torch.tensor([[105.0, 5.0, 115.0, 15.0], [40.0, 10.0, 60.0, 30.0]]),
        uncertain_labels=torch.tensor([3, 4]),
        uncertain_scores=torch.tensor([0.35, 0.45]),
    )
    strong = pseudo.map(_weak_to_strong_flip_and_double(), image_size=(160, 200))

    # (-10..20, 70..90) -> x 160..220, y 140..180 -> clipped to x <= 200, y <= 160.
    torch.testing.assert_close(strong.reliable_boxes, torch.tensor([[160.0, 140.0, 200.0, 160.0]]))
    assert strong.reliable_labels.tolist() == [1]
    torch.testing.assert_close(strong.uncertain_boxes, torch.tensor([[80.0, 20.0, 120.0, 60.0]]))
    assert strong.uncertain_labels.tolist() == [4]
    torch.testing.assert_close(strong.uncertain_scores, torch.tensor([0.45]))


def test_map_there_and_back_restores_the_boxes():
    pseudo = PseudoLabels(
        reliable_boxes=torch.tensor([[12.5, 3.25, 47.0, 61.0]]),
        reliable_labels=torch.tensor([1]),
        uncertain_boxes=torch.tensor([[0.0, 0.0, 100.0, 80.0]]),
        uncertain_labels=torch.tensor([2]),
        uncertain_scores=torch.tensor([0.3]),
    )
    to_strong = _weak_to_strong_flip_and_double()
    back = pseudo.map(to_strong, (160, 200)).map(torch.linalg.inv(to_strong), (80, 100))
    torch.testing.assert_close(back.reliable_boxes, pseudo.reliable_boxes)
    torch.testing.assert_close(back.uncertain_boxes, pseudo.uncertain_boxes)


def test_merge_moves_uncertain_boxes_after_the_reliable_ones():
    pseudo = PseudoLabels(
        reliable_boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        reliable_labels=torch.tensor([1]),
        uncertain_boxes=torch.tensor([[5.0, 5.0, 20.0, 20.0], [30.0, 30.0, 40.0, 40.0]]),
        uncertain_labels=torch.tensor([2, 3]),
        uncertain_scores=torch.tensor([0.3, 0.4]),
    )
    merged = merge_uncertain_into_reliable(pseudo)

    torch.testing.assert_close(
        merged.reliable_boxes, torch.cat([pseudo.reliable_boxes, pseudo.uncertain_boxes])
    )
    assert merged.reliable_labels.tolist() == [1, 2, 3]
    assert merged.uncertain_boxes.shape == (0, 4)
    assert merged.uncertain_labels.shape == (0,) and merged.uncertain_labels.dtype == torch.long
    assert merged.uncertain_scores.shape == (0,)


def test_batch_split_splits_each_image_by_its_own_detections():
    """Three images (one without detections) split together: each image keeps its own rows, in
    their order (hand-computed with the thresholds above)."""
    first = _detections([(0.7, 1), (0.19, 2), (0.3, 1), (0.5, 2), (0.69, 1)])
    third = _detections([(0.2, 2), (0.9, 1)])
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    detections = [{"boxes": b, "scores": s, "labels": c} for b, s, c in (first, empty, third)]
    batch = split_batch_by_thresholds(detections, RELIABLE_THRESHOLDS, UNCERTAIN_THRESHOLDS)

    assert len(batch) == 3
    # Image 0: rows 0 (0.7, class 1) and 3 (0.5, class 2) reliable; 2 and 4 uncertain; 1 dropped.
    torch.testing.assert_close(batch[0].reliable_boxes, first[0][[0, 3]])
    assert batch[0].reliable_labels.tolist() == [1, 2]
    torch.testing.assert_close(batch[0].uncertain_boxes, first[0][[2, 4]])
    assert batch[0].uncertain_labels.tolist() == [1, 1]
    torch.testing.assert_close(batch[0].uncertain_scores, torch.tensor([0.3, 0.69]))
    assert batch[1].reliable_boxes.shape == (0, 4) and batch[1].uncertain_boxes.shape == (0, 4)
    assert len(batch[1].reliable_labels) == len(batch[1].uncertain_scores) == 0
    # Image 2: row 1 reliable, row 0 (0.2 = t_u of class 2) uncertain.
    torch.testing.assert_close(batch[2].reliable_boxes, third[0][[1]])
    assert batch[2].reliable_labels.tolist() == [1]
    torch.testing.assert_close(batch[2].uncertain_boxes, third[0][[0]])
    torch.testing.assert_close(batch[2].uncertain_scores, torch.tensor([0.2]))
    assert split_batch_by_thresholds([], RELIABLE_THRESHOLDS, UNCERTAIN_THRESHOLDS) == []


def test_batch_map_moves_each_image_through_its_own_matrix_and_size():
    """Image 0 flips and doubles into a 160 x 200 view and loses a reliable box that ends
    outside it; image 1 only halves into 40 x 50 and loses an uncertain box the same way;
    image 2 has no boxes (hand-computed)."""
    zero = PseudoLabels(
        # Row 1 lies right of the 100-wide weak view: flipped, it ends left of the strong one.
        reliable_boxes=torch.tensor([[10.0, 20.0, 30.0, 40.0], [110.0, 0.0, 120.0, 10.0]]),
        reliable_labels=torch.tensor([3, 5]),
        uncertain_boxes=torch.tensor([[90.0, 0.0, 100.0, 10.0]]),
        uncertain_labels=torch.tensor([1]),
        uncertain_scores=torch.tensor([0.4]),
    )
    one = PseudoLabels(
        reliable_boxes=torch.zeros(0, 4),
        reliable_labels=torch.zeros(0, dtype=torch.long),
        # Row 0 halves to x 55..60, right of the 50-wide view: dropped with its label and score.
        uncertain_boxes=torch.tensor([[110.0, 0.0, 120.0, 10.0], [20.0, 10.0, 60.0, 30.0]]),
        uncertain_labels=torch.tensor([2, 4]),
        uncertain_scores=torch.tensor([0.35, 0.45]),
    )
    two = PseudoLabels(
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0),
    )
    matrices = [_weak_to_strong_flip_and_double(), scale_matrix(0.5, 0.5), scale_matrix(2, 2)]
    sizes = [(160, 200), (40, 50), (10, 10)]
    for given in (matrices, torch.stack(matrices)):  # B matrices, or one [B, 3, 3] tensor
        mapped = map_pseudo_labels([zero, one, two], given, sizes)
        torch.testing.assert_close(
            mapped[0].reliable_boxes, torch.tensor([[140.0, 40.0, 180.0, 80.0]])
        )
        assert mapped[0].reliable_labels.tolist() == [3]
        torch.testing.assert_close(
            mapped[0].uncertain_boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0]])
        )
        assert mapped[0].uncertain_labels.tolist() == [1]
        torch.testing.assert_close(mapped[0].uncertain_scores, torch.tensor([0.4]))
        assert mapped[1].reliable_boxes.shape == (0, 4) and len(mapped[1].reliable_labels) == 0
        torch.testing.assert_close(
            mapped[1].uncertain_boxes, torch.tensor([[10.0, 5.0, 30.0, 15.0]])
        )
        assert mapped[1].uncertain_labels.tolist() == [4]
        torch.testing.assert_close(mapped[1].uncertain_scores, torch.tensor([0.45]))
        assert mapped[2].reliable_boxes.shape == (0, 4) and mapped[2].uncertain_boxes.shape == (
            0,
            4,
        )
    assert map_pseudo_labels([], [], []) == []
    with pytest.raises(ValueError, match="one matrix and one size per image"):
        map_pseudo_labels([zero, one], matrices, sizes)
