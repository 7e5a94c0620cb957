"""benchmarks/prior_estimators.py: the shipped estimated prior (calibrated EM, with and without its
score floor) against its alternatives on a trained teacher's passes (issue #17), and the same
fitted on held-out (val) images. The alternatives' arithmetic on hand-built passes, the report
on the smoke run."""

from pathlib import Path

import prior_estimators
import pytest
import torch
from hydra.utils import instantiate

from labelmatch.data.class_prior import ClassPrior
from labelmatch.method.act import unlabeled_class_prior
from tests.conftest import compose_config

Pass = prior_estimators.Pass


def one_image_pass(labels, scores, matched, true_counts, boxes=None) -> Pass:
    """A pass over one image; rows put all foreground mass on each detection's label."""
    labels = torch.tensor(labels)
    if boxes is None:  # far apart: no two overlap
        boxes = [[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(len(labels))]
    rows = torch.zeros(len(labels), len(true_counts) + 1, dtype=torch.float64)
    rows[torch.arange(len(labels)), labels] = torch.tensor(scores, dtype=torch.float64)
    rows[:, 0] = 1 - rows.sum(dim=1)
    return Pass(
        [torch.tensor(boxes)],
        [labels],
        [torch.tensor(scores)],
        [rows],
        [torch.tensor(matched)],
        torch.tensor(true_counts, dtype=torch.float64),
    )


def test_class_agnostic_nms_keeps_the_best_detection_of_each_location() -> None:
    boxes = [[0.0, 0.0, 10, 10], [0.0, 0.0, 10, 9], [50.0, 0, 60, 10]]  # first two: IoU 0.9
    samples = one_image_pass([1, 2, 2], [0.6, 0.3, 0.5], [1, 1, 2], [1.0, 1.0], boxes)
    assert samples.detections().labels.tolist() == [1, 2, 2]
    kept = samples.detections(agnostic_iou=0.5)
    assert kept.labels.tolist() == [1, 2] and kept.scores.tolist() == pytest.approx([0.6, 0.5])
    assert samples.detections().scoring_at_least(0.55).labels.tolist() == [1]


def test_adjusted_count_scales_each_class_by_its_labeled_true_to_predicted_ratio() -> None:
    # Labeled: true shares 0.75 / 0.25, predicted 2 / 2 (>= 0.5): class 1 under-predicted x1.5,
    # class 2 over-predicted x0.5. Unlabeled predicted 1 / 3 -> 1 * 1.5 : 3 * 0.5 = 0.5 / 0.5.
    labeled = one_image_pass([1, 1, 2, 2, 2], [0.9, 0.8, 0.9, 0.7, 0.4], [1, 1, 2, 1, 0], [3, 1])
    unlabeled = one_image_pass([1, 2, 2, 2], [0.9, 0.9, 0.6, 0.5], [1, 2, 2, 2], [1, 3])
    prior = ClassPrior(torch.tensor([0.75, 0.25]), 4.0)
    shares = prior_estimators.adjusted_count(unlabeled, labeled, prior, floor=0.5)
    assert shares.tolist() == pytest.approx([0.5, 0.5])


def test_bbse_inverts_the_labeled_confusion() -> None:
    # Labeled detections on boxes: true 1 -> predicted 1 three times and 2 once; true 2 -> 2
    # twice. M = [[0.75, 0], [0.25, 1]]. Unlabeled predicted shares q = (0.375, 0.625) = M w
    # for w = (0.5, 0.5).
    labeled = one_image_pass([1, 1, 1, 2, 2, 2], [0.9] * 6, [1, 1, 1, 1, 2, 2], [4, 2])
    unlabeled = one_image_pass([1] * 3 + [2] * 5, [0.9] * 8, [0] * 8, [4, 4])
    prior = ClassPrior(torch.tensor([2 / 3, 1 / 3]), 6.0)
    assert prior_estimators.bbse(unlabeled, labeled, prior).tolist() == pytest.approx([0.5, 0.5])


def test_count_estimators_without_a_confident_detection_return_the_labeled_prior() -> None:
    weak = one_image_pass([1, 2], [0.2, 0.3], [1, 2], [1, 1])
    prior = ClassPrior(torch.tensor([0.8, 0.2]), 2.0)
    for estimator in (prior_estimators.adjusted_count, prior_estimators.bbse):
        assert estimator(weak, weak, prior).tolist() == pytest.approx([0.8, 0.2])


def test_mass_per_object_sums_the_scores_matched_to_each_class() -> None:
    samples = one_image_pass([1, 2, 2, 1], [0.9, 0.3, 0.8, 0.2], [1, 1, 2, 0], [1, 2, 0])
    mass = prior_estimators.mass_per_object(samples)
    assert mass[:2].tolist() == pytest.approx([1.2, 0.4]) and mass[2].isnan()


def test_compare_reports_every_estimator_against_the_truth(smoke_run: Path) -> None:
    report = prior_estimators.compare([smoke_run], experiment="smoke")
    tv_table, mass_table, box_table = (part.splitlines() for part in report.split("\n\n"))
    names = [*prior_estimators.ESTIMATORS, *prior_estimators.HELD_OUT]
    assert tv_table[0] == "| run | TV labeled | " + " | ".join(f"TV {n}" for n in names) + " |"
    row = [float(c) for c in tv_table[2].strip("| ").split(" | ")[1:]]
    assert len(row) == len(names) + 1 and all(0.0 <= v <= 1.0 for v in row)
    assert tv_table[3].startswith("| mean of 1 | ")
    datamodule = instantiate(compose_config(["experiment=smoke", "data.num_workers=0"]).data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    truth = unlabeled_class_prior(datamodule)
    assert row[0] == pytest.approx(datamodule.labeled_class_prior.total_variation(truth), abs=5e-4)
    assert [line.split(" | ")[1] for line in mass_table[2:]] == ["unlabeled", "labeled", "val"]
    for line in mass_table[2:]:
        assert len(line.strip("| ").split(" | ")[2].split()) == truth.num_classes
    true_boxes, *estimates = (float(c) for c in box_table[2].strip("| ").split(" | ")[1:])
    assert true_boxes == pytest.approx(truth.boxes_per_image, abs=5e-3)
    assert len(estimates) == 2 and all(b >= 0 for b in estimates)


def test_held_out_diagnostics_fit_on_the_pass_and_prior_they_are_given() -> None:
    """The val columns are the labeled columns' functions given the val pass and the val
    images' own prior: a confusion measured elsewhere gives another answer."""
    unlabeled = one_image_pass([1] * 3 + [2] * 5, [0.9] * 8, [0] * 8, [4, 4])
    trained_on = one_image_pass([1, 2], [0.9, 0.9], [1, 2], [1, 1])  # no confusion
    held_out = one_image_pass([1, 1, 1, 2, 2, 2], [0.9] * 6, [1, 1, 1, 1, 2, 2], [4, 2])
    prior = ClassPrior(torch.tensor([0.5, 0.5]), 2.0)
    val_prior = ClassPrior(torch.tensor([2 / 3, 1 / 3]), 6.0)
    bbse = prior_estimators.HELD_OUT["BBSE on val"]
    assert bbse(unlabeled, trained_on, prior).tolist() == pytest.approx([0.375, 0.625])
    assert bbse(unlabeled, held_out, val_prior).tolist() == pytest.approx([0.5, 0.5])
