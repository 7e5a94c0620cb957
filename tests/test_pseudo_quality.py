"""Pseudo-label quality measures (Fig. 4) on hand-computed boxes and distributions, and the one
implementation (`PseudoLabelQuality`) the training callback and the quality benchmark share."""

from __future__ import annotations

import math

import pytest
import torch
from quality import pseudo_label_statistics
from torch import Tensor, nn

from labelmatch.data.class_prior import ClassPrior
from labelmatch.evaluation.pseudo_quality import PseudoLabelQuality, kl_divergence, match_precision
from labelmatch.method.pseudo_labels import split_by_thresholds


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
PRIOR = ClassPrior(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), boxes_per_image=1.5)
NAMES = ["1", "2", "3"]

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
    stats = pseudo_label_statistics(teacher, LOADER, RELIABLE, UNCERTAIN, PRIOR, NAMES)

    assert stats["num_images"] == 2
    assert stats["precision"] == pytest.approx(3 / 5)
    assert stats["reliable_precision"] == pytest.approx(2 / 3)
    assert stats["pseudo_per_image"] == pytest.approx(5 / 2)
    assert stats["reliable_per_image"] == pytest.approx(3 / 2)
    assert stats["gt_per_image"] == pytest.approx(3 / 2)
    # Pseudo labels 1, 2, 3, 3, 1 -> [0.4, 0.2, 0.4]; ground truth 1, 2, 3 -> thirds.
    pseudo = [0.4, 0.2, 0.4]
    kl_prior = sum(p * math.log(p / q) for p, q in zip(pseudo, PRIOR.class_ratios.tolist()))
    kl_gt = sum(p * math.log(p / (1 / 3)) for p in pseudo)
    assert stats["kl_to_prior"] == pytest.approx(kl_prior)
    assert stats["kl_to_gt"] == pytest.approx(kl_gt)
    # The teacher labels in eval mode and is handed back in the mode it came in.
    assert teacher.modes_seen == [False, False]
    assert teacher.training


def test_pseudo_label_statistics_without_pseudo_boxes_is_nan_not_zero() -> None:
    teacher = FixedTeacher({0: [(A, 1, 0.1)], 1: []})
    stats = pseudo_label_statistics(teacher, LOADER, RELIABLE, UNCERTAIN, PRIOR, NAMES)
    assert stats["pseudo_per_image"] == 0.0
    assert stats["gt_per_image"] == pytest.approx(1.5)
    for key in ("precision", "reliable_precision", "kl_to_prior", "kl_to_gt"):
        assert math.isnan(stats[key]), key


def test_pseudo_label_statistics_rejects_an_empty_loader() -> None:
    with pytest.raises(ValueError, match="no image"):
        pseudo_label_statistics(FixedTeacher({}), [], RELIABLE, UNCERTAIN, PRIOR, NAMES)


# ------------------------------------------------------ the same numbers as the two former copies
# A constructed case: 6 images, 4 classes, boxes drawn near the ground truth under a fixed seed
# (true positives, duplicates, wrong classes, strays, an image without ground truth). The
# expected values were computed by the two implementations this metric replaced (revision
# 041048b: `pseudo_label_statistics` of the benchmark, `count_pseudo_labels` +
# `summarize_counts` of the callback) and are kept here as literals.
CASE_NAMES = ["a", "b", "c", "d"]
CASE_RELIABLE = torch.tensor([0.7, 0.6, 0.8, 0.7])
CASE_UNCERTAIN = torch.tensor([0.3, 0.4, 0.5, 0.2])
CASE_PRIOR = ClassPrior(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64), 2.5)
FORMER_BENCHMARK = {
    "precision": 0.19047619047619047, "reliable_precision": 0.21428571428571427,
    "pseudo_per_image": 3.5, "reliable_per_image": 2.3333333333333335,
    "gt_per_image": 2.1666666666666665, "kl_to_prior": 0.22058859695613933,
    "kl_to_gt": 0.1302249139888985, "num_images": 6,
}  # fmt: skip
FORMER_CALLBACK = {
    "reliable_per_image": 2.3333333333333335, "uncertain_per_image": 1.1666666666666667,
    "mined_per_image": 0.5, "boxes_per_image": 3.5, "prior_per_image": 2.5,
    "prior_share/a": 0.4, "prior_share/b": 0.3, "prior_share/c": 0.2, "prior_share/d": 0.1,
    "share/a": 0.2857142857142857, "share/b": 0.2857142857142857,
    "share/c": 0.09523809523809523, "share/d": 0.3333333333333333,
    "kl_to_prior": 0.22058859695613933, "gt_per_image": 2.1666666666666665,
    "gt_share/a": 0.15384615384615385, "gt_share/b": 0.38461538461538464,
    "gt_share/c": 0.23076923076923078, "gt_share/d": 0.23076923076923078,
    "recall": 0.3076923076923077, "kl_to_gt": 0.1302249139888985,
    "precision": 0.19047619047619047, "reliable_precision": 0.21428571428571427,
    "precision/a": 0.0, "recall/a": 0.0, "precision/b": 0.3333333333333333, "recall/b": 0.4,
    "precision/c": 0.0, "recall/c": 0.0, "precision/d": 0.2857142857142857,
    "recall/d": 0.6666666666666666,
}  # fmt: skip


def constructed_case() -> list[tuple[dict[str, Tensor], Tensor, Tensor]]:
    """[(detections {boxes [N,4], scores [N] descending, labels [N]}, gt boxes [G,4], gt labels
    [G])] of the 6 images."""
    g = torch.Generator().manual_seed(15)
    images = []
    for _ in range(6):
        num_gt = int(torch.randint(0, 5, (1,), generator=g))
        xy = torch.randint(0, 80, (num_gt, 2), generator=g).float()
        wh = torch.randint(8, 30, (num_gt, 2), generator=g).float()
        gt = torch.cat([xy, xy + wh], 1)
        gt_labels = torch.randint(1, 5, (num_gt,), generator=g)
        # One detection per ground-truth box (jittered, a fifth of them of a random class),
        # a duplicate of the first, and strays.
        found = gt + torch.randint(-6, 7, (num_gt, 4), generator=g).float()
        wrong = torch.rand(num_gt, generator=g) < 0.2
        found_labels = torch.where(wrong, torch.randint(1, 5, (num_gt,), generator=g), gt_labels)
        num_strays = int(torch.randint(0, 4, (1,), generator=g))
        corner = torch.randint(0, 90, (num_strays, 2), generator=g).float()
        strays = torch.cat([corner, corner + 12], 1)
        stray_labels = torch.randint(1, 5, (num_strays,), generator=g)
        boxes, labels_ = strays, stray_labels
        if num_gt:
            boxes = torch.cat([found, found[:1] + 1, strays])
            labels_ = torch.cat([found_labels, found_labels[:1], stray_labels])
        scores = torch.rand(len(boxes), generator=g)
        order = scores.argsort(descending=True)
        detections = {"boxes": boxes[order], "scores": scores[order], "labels": labels_[order]}
        images.append((detections, gt, gt_labels))
    return images


def case_pseudo_labels(images) -> list:
    return [
        split_by_thresholds(d["boxes"], d["scores"], d["labels"], CASE_RELIABLE, CASE_UNCERTAIN)
        for d, _, _ in images
    ]


def test_the_metric_gives_the_callbacks_former_numbers() -> None:
    images = constructed_case()
    quality = PseudoLabelQuality(CASE_NAMES)
    pseudo = case_pseudo_labels(images)
    quality.update(pseudo[:4], [i[1] for i in images[:4]], [i[2] for i in images[:4]], 2)
    quality.update(pseudo[4:], [i[1] for i in images[4:]], [i[2] for i in images[4:]], 1)
    assert quality.compute(CASE_PRIOR) == FORMER_CALLBACK


def test_the_benchmark_gives_its_former_numbers_through_the_metric() -> None:
    images = constructed_case()
    loader = [
        {"images": [torch.full((3, 4, 4), float(i))], "targets": [{"boxes": gt, "labels": gl}]}
        for i, (_, gt, gl) in enumerate(images)
    ]
    teacher = FixedTeacher({i: [] for i in range(len(images))})
    teacher.forward = lambda batch: [images[int(image[0, 0, 0])][0] for image in batch]
    stats = pseudo_label_statistics(
        teacher, loader, CASE_RELIABLE, CASE_UNCERTAIN, CASE_PRIOR, CASE_NAMES
    )
    assert stats == FORMER_BENCHMARK


def test_counts_add_up_as_the_ranks_sum_reduction_adds_them() -> None:
    """Under DDP torchmetrics sums each counter over the ranks: two halves added up (as a
    checkpoint's window is restored) must give the measures of the whole, and a reset starts an
    empty window."""
    images = constructed_case()
    pseudo = case_pseudo_labels(images)
    halves = [PseudoLabelQuality(CASE_NAMES), PseudoLabelQuality(CASE_NAMES)]
    for half, part in zip(halves, (slice(0, 3), slice(3, 6))):
        half.update(pseudo[part], [i[1] for i in images[part]], [i[2] for i in images[part]], 1)
    halves[0].restore(halves[1].counts())
    measures = halves[0].compute(CASE_PRIOR)
    assert measures["precision"] == FORMER_CALLBACK["precision"]
    assert measures["recall/d"] == FORMER_CALLBACK["recall/d"]
    halves[0].reset()
    assert int(halves[0].num_images) == 0 and int(halves[0].true_positives.sum()) == 0


def test_without_ground_truth_only_the_prior_side_is_measured() -> None:
    images = constructed_case()
    quality = PseudoLabelQuality(CASE_NAMES, with_ground_truth=False)
    quality.update(case_pseudo_labels(images), [i[1] for i in images], [i[2] for i in images])
    measures = quality.compute(CASE_PRIOR)
    assert measures["kl_to_prior"] == FORMER_CALLBACK["kl_to_prior"]
    assert not {"precision", "recall", "gt_per_image", "kl_to_gt"} & set(measures)
