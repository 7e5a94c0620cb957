"""Pseudo-label quality measures (Fig. 4) on hand-computed boxes and distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from labelmatch.evaluation.pseudo_quality import (
    class_distribution,
    kl_divergence,
    match_precision,
    pseudo_label_statistics,
)


def boxes(*rows: list[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def labels(*values: int) -> Tensor:
    return torch.tensor(values, dtype=torch.int64)


# ---------------------------------------------------------------------------- match_precision
def test_match_precision_counts_same_class_overlaps_once() -> None:
    gt = boxes([0, 0, 10, 10], [20, 20, 30, 30])
    predictions = boxes(
        [0, 0, 10, 10],  # class 1 on the class-1 box: IoU 1 -> TP
        [20, 20, 30, 30],  # class 1 on the class-2 box: wrong class -> FP
        [0, 0, 10, 5],  # IoU 0.5 with the class-1 box, already claimed -> FP (duplicate)
    )
    assert match_precision(predictions, labels(1, 1, 1), gt, labels(1, 2)) == (1, 3)


def test_match_precision_iou_threshold_is_inclusive() -> None:
    half = boxes([0, 0, 10, 5])  # IoU 50 / 100 = 0.5 with the ground truth
    gt = boxes([0, 0, 10, 10])
    assert match_precision(half, labels(4), gt, labels(4), iou_threshold=0.5) == (1, 1)
    assert match_precision(half, labels(4), gt, labels(4), iou_threshold=0.51) == (0, 1)


def test_match_precision_visits_predictions_by_descending_score() -> None:
    gt = boxes([0, 0, 10, 10], [0, 4, 10, 14])
    # a: IoU 1 with gt0, 60/140 = 0.43 with gt1. b: 90/110 = 0.82 with gt0, 70/130 = 0.54 with gt1.
    a_then_b = boxes([0, 0, 10, 10], [0, 1, 10, 11])
    same = labels(1, 1)
    a_first, b_first = torch.tensor([0.9, 0.8]), torch.tensor([0.7, 0.8])
    # a first takes gt0, b falls back to gt1: both correct.
    assert match_precision(a_then_b, same, gt, same, pred_scores=a_first) == (2, 2)
    # b first takes gt0 (its best), a is left with gt1 at 0.43 < 0.5.
    assert match_precision(a_then_b, same, gt, same, pred_scores=b_first) == (1, 2)
    assert match_precision(a_then_b, same, gt, same) == (2, 2)  # given order without scores
    assert match_precision(a_then_b.flip(0), same, gt, same) == (1, 2)


def test_match_precision_without_predictions_or_ground_truth() -> None:
    gt = boxes([0, 0, 10, 10])
    assert match_precision(boxes(), labels(), gt, labels(1)) == (0, 0)
    assert match_precision(gt, labels(1), boxes(), labels()) == (0, 1)


# ---------------------------------------------------------------------------- distributions
def test_class_distribution_normalises_counts_of_classes_1_to_c() -> None:
    distribution = class_distribution(labels(1, 1, 2, 3), num_classes=4)
    assert distribution.tolist() == [0.5, 0.25, 0.25, 0.0]


def test_class_distribution_of_no_label_is_all_zeros() -> None:
    assert class_distribution(labels(), num_classes=3).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [0, 4])
def test_class_distribution_rejects_labels_outside_1_to_c(bad: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.3"):
        class_distribution(labels(1, bad), num_classes=3)


def test_kl_divergence_hand_computed() -> None:
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.1438
    assert kl_divergence(p, q) == pytest.approx(expected)
    assert kl_divergence(q, p) != pytest.approx(expected)  # not symmetric: direction matters
    assert kl_divergence(p, p) == pytest.approx(0.0)


def test_kl_divergence_zero_terms_and_eps_floor() -> None:
    # p_c = 0 contributes nothing; q_c = 0 under p_c > 0 is floored at eps, finite.
    assert kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])) == pytest.approx(
        math.log(2)
    )
    expected = 0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-8)
    value = kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), eps=1e-8)
    assert value == pytest.approx(expected)


def test_kl_divergence_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must be 1-D and equal"):
        kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))


# ---------------------------------------------------------------------------- over a loader
class FixedTeacher(nn.Module):
    """Returns the detections listed for an image, looked up by the image's constant value."""

    def __init__(self, detections: dict[int, list[tuple[list[float], int, float]]]) -> None:
        super().__init__()
        self.detections = detections
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device
        self.modes_seen: list[bool] = []

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        self.modes_seen.append(self.training)
        outputs = []
        for image in images:
            rows = self.detections[int(image[0, 0, 0])]
            outputs.append(
                {
                    "boxes": boxes(*[row[0] for row in rows]),
                    "labels": labels(*[row[1] for row in rows]),
                    "scores": torch.tensor([row[2] for row in rows]),
                }
            )
        return outputs


def batch(image_value: int, gt_boxes: Tensor, gt_labels: Tensor) -> dict[str, list]:
    return {
        "images": [torch.full((3, 8, 8), float(image_value))],
        "targets": [{"boxes": gt_boxes, "labels": gt_labels, "image_id": image_value}],
    }


RELIABLE = torch.tensor([0.7, 0.7, 0.7])
UNCERTAIN = torch.tensor([0.3, 0.5, 0.3])
PRIOR = torch.tensor([0.5, 0.25, 0.25])

# Image 0: ground truth class 1 at A, class 2 at B. Image 1: class 3 at C.
A, B, C, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15], [40, 40, 50, 50]
LOADER = [batch(0, boxes(A, B), labels(1, 2)), batch(1, boxes(C), labels(3))]
DETECTIONS = {
    0: [
        (A, 1, 0.9),  # reliable, TP
        (B, 2, 0.6),  # uncertain (0.5 <= 0.6 < 0.7), TP
        (FAR, 3, 0.4),  # uncertain (0.3 <= 0.4 < 0.7), FP
        (A, 2, 0.45),  # below class 2's uncertain threshold 0.5: dropped
        (B, 1, 0.2),  # below class 1's uncertain threshold 0.3: dropped
    ],
    1: [
        (C, 3, 0.95),  # reliable, TP
        ([50, 50, 60, 60], 1, 0.8),  # reliable, FP
    ],
}


def test_pseudo_label_statistics_hand_computed() -> None:
    teacher = FixedTeacher(DETECTIONS).train()
    stats = pseudo_label_statistics(teacher, LOADER, RELIABLE, UNCERTAIN, PRIOR, num_classes=3)

    assert stats["num_images"] == 2
    assert stats["precision"] == pytest.approx(3 / 5)
    assert stats["reliable_precision"] == pytest.approx(2 / 3)
    assert stats["pseudo_per_image"] == pytest.approx(5 / 2)
    assert stats["reliable_per_image"] == pytest.approx(3 / 2)
    assert stats["gt_per_image"] == pytest.approx(3 / 2)
    # Pseudo labels 1, 2, 3, 3, 1 -> [0.4, 0.2, 0.4]; ground truth 1, 2, 3 -> thirds.
    pseudo = [0.4, 0.2, 0.4]
    kl_prior = sum(p * math.log(p / q) for p, q in zip(pseudo, PRIOR.tolist()))
    kl_gt = sum(p * math.log(p / (1 / 3)) for p in pseudo)
    assert stats["kl_to_prior"] == pytest.approx(kl_prior)
    assert stats["kl_to_gt"] == pytest.approx(kl_gt)
    # The teacher labels in eval mode and is handed back in the mode it came in.
    assert teacher.modes_seen == [False, False]
    assert teacher.training


def test_pseudo_label_statistics_without_pseudo_boxes_is_nan_not_zero() -> None:
    teacher = FixedTeacher({0: [(A, 1, 0.1)], 1: []})
    stats = pseudo_label_statistics(teacher, LOADER, RELIABLE, UNCERTAIN, PRIOR, num_classes=3)
    assert stats["pseudo_per_image"] == 0.0
    assert stats["gt_per_image"] == pytest.approx(1.5)
    for key in ("precision", "reliable_precision", "kl_to_prior", "kl_to_gt"):
        assert math.isnan(stats[key]), key


def test_pseudo_label_statistics_rejects_an_empty_loader() -> None:
    with pytest.raises(ValueError, match="no image"):
        pseudo_label_statistics(FixedTeacher({}), [], RELIABLE, UNCERTAIN, PRIOR, num_classes=3)
