"""benchmarks/prior_estimators.py: the shipped estimated prior (calibrated EM, with and without its
score floor) against its alternatives on a trained teacher's passes (issue #17), and the same
fitted on held-out (val) images. The alternatives' arithmetic on hand-built passes, the report
on the smoke run."""

import math
from pathlib import Path

import prior_estimators
import pytest
import torch
from hydra.utils import instantiate

from labelmatch.checkpoints import load_module, pick_detector
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
    datamodule = instantiate(compose_config(["experiment=smoke", "data.num_workers=0"]).data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    focus = datamodule.class_names[0]
    report = prior_estimators.compare(
        [smoke_run], experiment="smoke", focus=[focus], calibration_data=["data.splits.seed=1"]
    )
    tables = [part.splitlines() for part in report.split("\n\n")]
    tv_table, mass_table, box_table, test_table, focus_table = tables
    names = [*prior_estimators.ESTIMATORS, *prior_estimators.HELD_OUT]
    names.append("calibrated EM >= 0.3 on held-out labeled")
    assert tv_table[0] == "| run | TV labeled | " + " | ".join(f"TV {n}" for n in names) + " |"
    row = [float(c) for c in tv_table[2].strip("| ").split(" | ")[1:]]
    assert len(row) == len(names) + 1 and all(0.0 <= v <= 1.0 for v in row)
    assert tv_table[3].startswith("| mean of 1 | ")
    truth = unlabeled_class_prior(datamodule)
    assert row[0] == pytest.approx(datamodule.labeled_class_prior.total_variation(truth), abs=5e-4)
    assert [line.split(" | ")[1] for line in mass_table[2:]] == ["unlabeled", "labeled", "val"]
    for line in mass_table[2:]:
        assert len(line.strip("| ").split(" | ")[2].split()) == truth.num_classes
    true_boxes, *estimates = (float(c) for c in box_table[2].strip("| ").split(" | ")[1:])
    assert true_boxes == pytest.approx(truth.boxes_per_image, abs=5e-3)
    assert len(estimates) == 2 and all(b >= 0 for b in estimates)
    degrees, ratio, p_ratio, pearson, p_pearson = (
        float(c) for c in test_table[2].strip("| ").split(" | ")[1:]
    )
    assert degrees == truth.num_classes - 1 and ratio >= 0 and pearson >= 0
    assert 0 <= p_ratio <= 1 and 0 <= p_pearson <= 1
    assert focus_table[0].count("calibrated EM >= 0.3 on ") == 3  # labeled, val, held-out
    cells = focus_table[2].strip("| ").split(" | ")
    assert len(cells) == 11 and cells[1] == f"`{focus}`"
    assert float(cells[2]) == pytest.approx(truth.class_ratios[0].item(), abs=5e-4)
    assert float(cells[3]) == pytest.approx(
        datamodule.labeled_class_prior.class_ratios[0].item(), abs=5e-4
    )
    assert all(0.0 <= float(share) <= 1.0 for share in cells[4:7])
    for masses in cells[7:]:  # the unlabeled pass, then the three calibration passes
        own, inflow = (float(v) for v in masses.split(" / "))
        assert own >= 0 and inflow >= 0


def soft_pass(rows, scores, matched, true_counts) -> Pass:
    """A pass over one image with the given foreground rows [N, C] (background 0), far apart."""
    rows = torch.tensor(rows, dtype=torch.float64)
    rows = torch.cat([torch.zeros(len(rows), 1, dtype=torch.float64), rows], dim=1)
    labels = rows.argmax(dim=1)
    boxes = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(len(rows))])
    return Pass(
        [boxes],
        [labels],
        [torch.tensor(scores)],
        [rows],
        [torch.tensor(matched)],
        torch.tensor(true_counts, dtype=torch.float64),
    )


def test_class_mass_splits_calibrated_mass_into_own_boxes_and_inflow() -> None:
    # Labeled posteriors (0.8, 0.2) and (0.4, 0.6), prior (0.5, 0.5): the calibration's bias
    # ratio r = b2 / b1 solves 0.8 / (0.8 + 0.2 r) + 0.4 / (0.4 + 0.6 r) = 1, r² = 8 / 3.
    labeled = soft_pass([[0.8, 0.2], [0.4, 0.6]], [1.0, 1.0], [1, 2], [1, 1])
    prior = ClassPrior(torch.tensor([0.5, 0.5]), 2.0)
    r = (8 / 3) ** 0.5
    # Unlabeled: (0.8, 0.2) at score 1 on a class-1 box, (0.4, 0.6) at 0.5 on background, two
    # class-1 boxes and one class-2 box in truth.
    unlabeled = soft_pass([[0.8, 0.2], [0.4, 0.6]], [1.0, 0.5], [1, 0], [2, 1])
    q_a = torch.tensor([0.8, 0.2 * r]) / (0.8 + 0.2 * r)
    q_b = torch.tensor([0.4, 0.6 * r]) / (0.4 + 0.6 * r)
    own, inflow = prior_estimators.class_mass(unlabeled, labeled, prior, index=0)
    assert (own, inflow) == pytest.approx((q_a[0].item() / 2, 0.5 * q_b[0].item() / 2), abs=1e-4)
    own, inflow = prior_estimators.class_mass(unlabeled, labeled, prior, index=1)
    assert (own, inflow) == pytest.approx((0.0, q_a[1].item() + 0.5 * q_b[1].item()), abs=1e-4)
    # Below the floor a detection counts for nothing.
    own, inflow = prior_estimators.class_mass(unlabeled, labeled, prior, index=1, floor=0.6)
    assert (own, inflow) == pytest.approx((0.0, q_a[1].item()), abs=1e-4)
    # A pass without a box of the class has no mass per box.
    no_box = soft_pass([[0.8, 0.2]], [1.0], [1], [1, 0])
    assert all(math.isnan(v) for v in prior_estimators.class_mass(no_box, labeled, prior, 1))


def test_shift_statistics_by_hand() -> None:
    # Calibrated labeled pass (one-hot rows, equal scores: biases 1); unlabeled one-hot rows of
    # classes 1, 1, 1, 2 at 0.9: EM shares (0.75, 0.25) in one step.
    labeled = one_image_pass([1, 2], [0.9, 0.9], [1, 2], [1, 1])
    unlabeled = one_image_pass([1, 1, 1, 2], [0.9] * 4, [0] * 4, [3, 1])
    prior = ClassPrior(torch.tensor([0.5, 0.5]), 2.0)
    ratio, pearson = prior_estimators.shift_statistics(unlabeled, labeled, prior)
    # LR = 2 · 0.9 · (3 log(0.75 / 0.5) + log(0.25 / 0.5)).
    assert ratio == pytest.approx(1.8 * (3 * math.log(1.5) + math.log(0.5)))
    # Labeled counts (1, 1) against 2 · (0.75, 0.25) = (1.5, 0.5).
    assert pearson == pytest.approx(0.5**2 / 1.5 + 0.5**2 / 0.5)
    # No shift: the unlabeled pass is the labeled one, both statistics 0.
    assert prior_estimators.shift_statistics(labeled, labeled, prior) == pytest.approx((0, 0))


def test_chi2_survival_matches_tabulated_quantiles() -> None:
    assert prior_estimators.chi2_survival(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert prior_estimators.chi2_survival(16.918978, 9) == pytest.approx(0.05, abs=1e-6)
    assert prior_estimators.chi2_survival(0.0, 9) == pytest.approx(1.0)


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


def test_held_out_calibration_passes_over_the_other_datasets_labeled_images(smoke_run) -> None:
    module, _ = load_module(smoke_run / "checkpoints/last.ckpt")
    module.teacher = pick_detector(module, "teacher")
    overrides = ["experiment=smoke", "data.num_workers=0"]
    name, samples, prior = prior_estimators.held_out_calibration(
        module, overrides, ["data.splits.seed=1"]
    )
    other = instantiate(compose_config([*overrides, "data.splits.seed=1"]).data)
    other.prepare_data()
    other.setup("fit")
    assert name == "held-out labeled" and len(samples.boxes) == len(other.labeled_dataset)
    assert torch.equal(prior.class_ratios, other.labeled_class_prior.class_ratios)
    own = instantiate(compose_config(overrides).data)
    own.prepare_data()
    own.setup("fit")
    # Another generator seed draws other canvases: not the run's own labeled images.
    assert not torch.equal(prior.class_ratios, own.labeled_class_prior.class_ratios)
    assert samples.true_counts.sum() > 0


def test_the_shift_test_table_reads_a_refresh_like_pass(smoke_run: Path, capsys) -> None:
    """One row per run; the smoke teacher has no detection at the 0.3 floor, so nothing is
    estimated: z 0, not detected, the bound for ten classes at level 0.05."""
    prior_estimators.main([str(smoke_run), "--experiment", "smoke", "--shift-test"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("| run | max abs z | bound | shift detected")
    cells = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert cells[1:4] == ["0.00", "2.81", "no"]
    with pytest.raises(SystemExit):  # a data override without --shift-test
        prior_estimators.main([str(smoke_run), "--experiment", "smoke", "data.splits.seed=2"])
