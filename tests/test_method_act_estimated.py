"""The estimated class prior (docs/method.md §2 "Estimated prior"): the EM of Saerens, Latinne &
Decaestecker (2002) on constructed posteriors with a known shift, the boxes-per-image estimate,
the oracle and configured priors, and the refresh pass's class-score rows."""

import logging
from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign

from labelmatch.callbacks.act_refresh import ACTRefresh, keeping_class_scores
from labelmatch.data.class_prior import class_prior_from_counts
from labelmatch.method.act import (
    ClassPrior,
    TeacherDetections,
    calibration_biases,
    configured_prior,
    em_label_shift,
    estimated_class_prior,
    labeled_class_prior,
    unlabeled_class_prior,
)
from labelmatch.plots import plot_class_prior

# A known posterior model: 4 classes, x | y ~ N(mu_y, sigma^2 I) in 2-D, centres on a square
# whose sides are 2 sigma apart: neighbouring classes overlap (the Bayes posteriors are far from
# one-hot), which is what makes a shift hard to see from argmax counts alone.
CENTRES = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
SIGMA = 1.0
LABELED = torch.tensor([0.55, 0.25, 0.15, 0.05], dtype=torch.float64)
REVERSED = LABELED.flip(0)
RISING = torch.tensor([0.05, 0.10, 0.35, 0.50], dtype=torch.float64)  # rare in labeled, common here
TOLERANCE_TV = 0.03  # total variation, on 4000 samples


def draw_posteriors(target: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """`num` samples with classes from `target`, each with its exact posterior under LABELED
    (what a calibrated classifier trained on the labeled distribution outputs). [num, 4]"""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.multinomial(target.float(), num, replacement=True, generator=generator)
    x = CENTRES[classes] + SIGMA * torch.randn(num, 2, generator=generator)
    log_likelihood = -((x[:, None, :] - CENTRES[None]) ** 2).sum(-1) / (2 * SIGMA**2)
    return torch.softmax(log_likelihood.double() + LABELED.log(), dim=1)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


def test_two_em_iterations_by_hand() -> None:
    posteriors = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    source = torch.tensor([0.5, 0.5], dtype=torch.float64)
    # 1st: pi = mean of the posteriors = (0.6, 0.4).
    first, iterations = em_label_shift(posteriors, torch.ones(2), source, max_iterations=1)
    assert iterations == 1
    assert first.tolist() == pytest.approx([0.6, 0.4], abs=1e-12)
    # 2nd: weights pi / p_l = (1.2, 0.8); row 1: (0.96, 0.16) / 1.12 = (6/7, 1/7);
    # row 2: (0.48, 0.48) / 0.96 = (1/2, 1/2); mean = (19/28, 9/28).
    second, iterations = em_label_shift(posteriors, torch.ones(2), source, max_iterations=2)
    assert iterations == 2
    assert second.tolist() == pytest.approx([19 / 28, 9 / 28], abs=1e-12)


def test_weights_count_as_repeated_samples() -> None:
    posteriors = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    source = torch.tensor([0.5, 0.3, 0.2])
    weighted, _ = em_label_shift(posteriors, torch.tensor([2.0, 1.0]), source)
    repeated, _ = em_label_shift(posteriors[[0, 0, 1]], torch.ones(3), source)
    assert torch.allclose(weighted, repeated, atol=1e-9)


@pytest.mark.parametrize("target", [REVERSED, RISING], ids=["reversed", "rare_becomes_common"])
def test_em_recovers_a_known_shift(target: torch.Tensor) -> None:
    posteriors = draw_posteriors(target, 4000, seed=1)
    estimate, iterations = em_label_shift(posteriors, torch.ones(4000), LABELED, 1000, 1e-8)
    assert iterations < 1000  # converged
    assert total_variation(estimate, target) <= TOLERANCE_TV
    # The posteriors' plain mean (the first step) is far off: the EM does the work.
    assert total_variation(posteriors.mean(0), target) > 2 * TOLERANCE_TV
    # A fixed point: one more iteration from the estimate moves it by at most the tolerance.
    adjusted = posteriors * (estimate / LABELED)
    again = (adjusted / adjusted.sum(1, keepdim=True)).mean(0)
    assert (again - estimate).abs().max().item() <= 1e-6


def test_em_keeps_the_labeled_prior_without_a_shift() -> None:
    posteriors = draw_posteriors(LABELED, 4000, seed=2)
    estimate, _ = em_label_shift(posteriors, torch.ones(4000), LABELED, 1000, 1e-8)
    assert total_variation(estimate, LABELED) <= TOLERANCE_TV


def test_a_class_without_detections_ends_at_zero_and_the_rest_is_estimated() -> None:
    posteriors = draw_posteriors(REVERSED, 4000, seed=3)
    posteriors[:, 3] = 0.0  # no sample gives class 4 any mass
    posteriors = posteriors / posteriors.sum(1, keepdim=True)
    estimate, _ = em_label_shift(posteriors, torch.ones(4000), LABELED, 1000, 1e-8)
    assert estimate[3].item() == 0.0
    assert estimate.sum().item() == pytest.approx(1.0)
    assert torch.isfinite(estimate).all()


def test_em_is_deterministic_and_returns_the_source_without_samples() -> None:
    posteriors = draw_posteriors(RISING, 500, seed=4)
    first, _ = em_label_shift(posteriors, torch.ones(500), LABELED)
    second, _ = em_label_shift(posteriors.clone(), torch.ones(500), LABELED.clone())
    assert torch.equal(first, second)
    empty, iterations = em_label_shift(torch.zeros(0, 4), torch.zeros(0), LABELED)
    assert iterations == 0 and torch.equal(empty, LABELED)


def test_em_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="posteriors"):
        em_label_shift(torch.ones(3, 2), torch.ones(3), LABELED)
    with pytest.raises(ValueError, match="source prior"):
        em_label_shift(torch.ones(3, 2) / 2, torch.ones(3), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="weights"):
        em_label_shift(torch.ones(3, 2) / 2, -torch.ones(3), torch.tensor([0.5, 0.5]))


def test_estimated_prior_by_hand() -> None:
    # Rows [background, class 1, class 2]; one-hot foregrounds, so the EM stops at the
    # score-weighted shares: class 1 (0.9 + 0.8) / 2.3, class 2 0.6 / 2.3.
    labels = torch.tensor([1, 1, 2])
    scores = torch.tensor([0.9, 0.8, 0.6])
    rows = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.4, 0.0, 0.6]])
    labeled = ClassPrior(torch.tensor([0.5, 0.5], dtype=torch.float64), 3.0)
    prior, iterations = estimated_class_prior(TeacherDetections(labels, scores, rows, 1), labeled)
    assert iterations == 2  # the second one confirms the first
    # Expected counts 2.3 x shares = (1.7, 0.6) -> (1.7, 1) by the labeled counts' "at least
    # one box" rule -> 2.7 boxes on the 1 image.
    assert prior.boxes_per_image == pytest.approx(2.7)
    assert prior.class_ratios.tolist() == pytest.approx([1.7 / 2.7, 1.0 / 2.7])


def test_min_score_drops_low_scoring_detections_from_both_passes_by_hand(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Rows [background, class 1, class 2], one-hot foregrounds: the by-hand case above plus two
    # clutter detections of class 2 scoring 0.25.
    labels = torch.tensor([1, 1, 2, 2, 2])
    scores = torch.tensor([0.9, 0.8, 0.6, 0.25, 0.25])
    rows = torch.tensor(
        [[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.4, 0.0, 0.6], [0.75, 0.0, 0.25], [0.75, 0.0, 0.25]]
    )
    unlabeled = TeacherDetections(labels, scores, rows, 1)
    labeled_prior = ClassPrior(torch.tensor([0.5, 0.5], dtype=torch.float64), 3.0)
    # Without a floor the clutter counts: (1.7, 0.6 + 0.5) -> 2.8 boxes.
    every, _ = estimated_class_prior(unlabeled, labeled_prior)
    assert every.boxes_per_image == pytest.approx(2.8)
    assert every.class_ratios.tolist() == pytest.approx([1.7 / 2.8, 1.1 / 2.8])
    # min_score 0.3: the same as the by-hand case above, (1.7, 1) -> 2.7 boxes.
    floored, _ = estimated_class_prior(unlabeled, labeled_prior, min_score=0.3)
    assert floored.boxes_per_image == pytest.approx(2.7)
    assert floored.class_ratios.tolist() == pytest.approx([1.7 / 2.7, 1.0 / 2.7])
    # Calibrated on a labeled pass (here the same detections): the floor applies there too, so
    # the score sums compare like with like (S_l 2.3, not 2.8 with the clutter).
    kept = unlabeled.scoring_at_least(0.3)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8, 0.6]) and kept.num_images == 1
    # The floor is inclusive: a score exactly at it stays (0.5 and 0.25 are exact in binary,
    # where float32 0.3 is not).
    at_floor = TeacherDetections(
        torch.tensor([1, 1]), torch.tensor([0.5, 0.25]), torch.tensor([[0.5, 0.5], [0.75, 0.25]]), 1
    )
    assert at_floor.scoring_at_least(0.5).scores.tolist() == [0.5]
    calibrated, _ = estimated_class_prior(unlabeled, labeled_prior, unlabeled, min_score=0.3)
    by_hand, _ = estimated_class_prior(kept, labeled_prior, kept)
    assert calibrated.boxes_per_image == pytest.approx(by_hand.boxes_per_image)
    assert torch.allclose(calibrated.class_ratios, by_hand.class_ratios)
    clutter_in_labeled, _ = estimated_class_prior(kept, labeled_prior, unlabeled)
    assert clutter_in_labeled.boxes_per_image != pytest.approx(calibrated.boxes_per_image)
    # Nothing at or above the floor: the labeled prior, as without detections.
    nothing, iterations = estimated_class_prior(unlabeled, labeled_prior, min_score=0.95)
    assert nothing is labeled_prior and iterations == 0
    with pytest.raises(ValueError, match="min_score must lie in"):
        ACTRefresh(prior="estimated", estimator_min_score=1.0)
    # the callback's other options, refused where they are given (one line: ConfigError)
    from labelmatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method.alpha must lie in \[0, 1\] .* got 1.5"):
        ACTRefresh(alpha=1.5)
    with pytest.raises(ConfigError, match=r"method.act.prior must be null, .* got 'foo'"):
        ACTRefresh(prior="foo")
    for key in ("subset", "interval"):  # a subset of 0 failed only at the first refresh
        with pytest.raises(ConfigError, match=rf"method.act.{key} must be a whole number >= 1"):
            ACTRefresh(**{key: 0})
    # A refresh's estimate (one process, no calibration pass, no shift test: every estimate is
    # aimed at) reads the floor it is given.
    act = ACTRefresh(
        prior="estimated", estimator_calibrate=False, estimator_min_score=0.3,
        shift_test_level=None,
    )  # fmt: skip
    act.labeled_prior = act.prior = labeled_prior
    trainer = SimpleNamespace(world_size=1)
    module = SimpleNamespace(global_step=8)
    detections = [{"labels": labels, "scores": scores, "class_scores": rows}]
    estimate = act.estimate_prior(trainer, module, detections, labels, scores, num_images=1)
    assert estimate.class_ratios.tolist() == pytest.approx(floored.class_ratios.tolist())
    assert estimate.boxes_per_image == pytest.approx(2.7)
    assert act.prior is labeled_prior  # the estimate is the refresh's, for the module to keep
    # A teacher with nothing above the floor (early in training): the labeled prior, and a
    # warning that says so.
    act = ACTRefresh(
        prior="estimated", estimator_calibrate=False, estimator_min_score=0.95,
        shift_test_level=None,
    )  # fmt: skip
    act.labeled_prior = act.prior = labeled_prior
    with caplog.at_level(logging.WARNING, logger="labelmatch"):
        estimate = act.estimate_prior(trainer, module, detections, labels, scores, num_images=1)
    assert estimate is labeled_prior
    assert "min_score=0.95 on 1 images; the labeled prior is kept" in caplog.text


def test_estimated_boxes_per_image_under_its_assumption() -> None:
    """Calibrated scores (a detection of score s is true with probability s), recall 1 and one
    true detection per object: the score sum per image estimates the objects per image."""
    generator = torch.Generator().manual_seed(5)
    num_images, per_image = 2000, 12
    scores = torch.rand(num_images * per_image, generator=generator) ** 2  # mostly low, as after
    true = torch.rand(len(scores), generator=generator) < scores  # a 0.001 floor
    labels = torch.randint(1, 3, (len(scores),), generator=generator)
    rows = torch.zeros(len(scores), 3)
    rows[torch.arange(len(scores)), labels] = scores
    rows[:, 0] = 1 - scores
    labeled = ClassPrior(torch.tensor([0.5, 0.5], dtype=torch.float64), 1.0)
    prior, _ = estimated_class_prior(TeacherDetections(labels, scores, rows, num_images), labeled)
    objects_per_image = true.sum().item() / num_images
    assert prior.boxes_per_image == pytest.approx(objects_per_image, rel=0.03)


def test_estimated_prior_without_detections_is_the_labeled_one() -> None:
    labeled = ClassPrior(torch.tensor([0.75, 0.25], dtype=torch.float64), 2.0)
    nothing = TeacherDetections(
        torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 3), 10
    )
    prior, iterations = estimated_class_prior(nothing, labeled)
    assert prior is labeled and iterations == 0
    with pytest.raises(ValueError, match="class_scores"):
        wrong = TeacherDetections(torch.tensor([1]), torch.tensor([0.5]), torch.zeros(1, 2), 1)
        estimated_class_prior(wrong, labeled)


def _datamodule(labeled_counts, labeled_images, unlabeled_counts, unlabeled_images):
    """The two priors `DetectionDataModule` computes from these counts (tested there)."""
    unlabeled = class_prior_from_counts(unlabeled_counts, unlabeled_images)
    return SimpleNamespace(
        labeled_class_prior=class_prior_from_counts(labeled_counts, labeled_images),
        unlabeled_class_prior=unlabeled if sum(unlabeled_counts) else None,
    )


def test_oracle_and_configured_priors() -> None:
    datamodule = _datamodule([6, 2], 4, [1, 9], 5)
    oracle = unlabeled_class_prior(datamodule)
    assert oracle.class_ratios.tolist() == pytest.approx([0.1, 0.9])
    assert oracle.boxes_per_image == pytest.approx(2.0)
    assert configured_prior(datamodule, "oracle").class_ratios.tolist() == pytest.approx([0.1, 0.9])
    labeled = labeled_class_prior(datamodule)
    assert labeled.class_ratios.tolist() == pytest.approx([0.75, 0.25])
    for setting in (None, "estimated"):  # "estimated" starts from the labeled counts
        prior = configured_prior(datamodule, setting)
        assert torch.equal(prior.class_ratios, labeled.class_ratios)
    manual = configured_prior(datamodule, {"class_ratios": [1, 3], "boxes_per_image": 7})
    assert manual.class_ratios.tolist() == [0.25, 0.75] and manual.boxes_per_image == 7
    with pytest.raises(ValueError, match="must be null"):
        configured_prior(datamodule, "estimate")
    with pytest.raises(ValueError, match="annotations in the unlabeled json"):
        unlabeled_class_prior(_datamodule([6, 2], 4, [0, 0], 5))


def test_refresh_pass_keeps_each_detections_softmax_row() -> None:
    """The wrapped postprocess returns torchvision's detections unchanged, and each detection's
    row gives its own score for its own class."""
    heads = RoIHeads(
        MultiScaleRoIAlign(["0"], 7, 2), None, None, 0.5, 0.5, 512, 0.25, None, 0.001, 0.5, 100
    )
    generator = torch.Generator().manual_seed(6)
    proposals = []
    for count in (40, 25):
        corners = torch.rand(count, 2, generator=generator) * 50
        proposals.append(torch.cat([corners, corners + 5 + 20 * torch.rand(count, 2)], dim=1))
    logits = 3 * torch.randn(65, 4, generator=generator)
    regression = 0.1 * torch.randn(65, 16, generator=generator)
    shapes = [(80, 80), (80, 80)]
    plain = heads.postprocess_detections(logits, regression, proposals, shapes)
    rows: list[torch.Tensor] = []
    kept = keeping_class_scores(heads.postprocess_detections, rows)(
        logits, regression, proposals, shapes
    )
    for expected, got in zip(plain, kept):
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    softmax = torch.softmax(logits, -1)
    for image_rows, scores, labels in zip(rows, kept[1], kept[2]):
        assert image_rows.shape == (len(scores), 4) and len(scores) > 10
        assert torch.equal(image_rows[torch.arange(len(labels)), labels], scores)
        # every row is one of the proposals' softmax rows
        assert all((softmax == row).all(1).any() for row in image_rows)


def test_between_refreshes_the_thresholds_aim_at_the_modules_prior_when_estimated() -> None:
    """The estimate has one home, the module (`threshold_prior`, checkpointed with the
    thresholds, tests/test_method_module.py): online ACT's queue updates read it from there, so a
    resumed run aims where it left off. With a configured prior the configured one holds."""
    labeled = ClassPrior(torch.tensor([0.5, 0.5], dtype=torch.float64), 2.0)
    estimate = ClassPrior(torch.tensor([0.2, 0.8], dtype=torch.float64), 3.5)
    module = SimpleNamespace(threshold_prior=None)
    for setting in ("estimated", None):
        act = ACTRefresh(prior=setting)
        act.prior = labeled
        assert act.aimed_prior(module) is labeled  # before the first refresh
    module.threshold_prior = estimate  # a refresh's, or a resumed checkpoint's
    assert ACTRefresh(prior="estimated").state_dict() == {}  # nothing of it in the callback
    act = ACTRefresh(prior="estimated")
    act.prior = labeled
    assert act.aimed_prior(module) is estimate
    act = ACTRefresh(prior=None)
    act.prior = labeled
    assert act.aimed_prior(module) is labeled


def test_an_older_checkpoints_estimate_moves_to_the_module() -> None:
    """Checkpoints written before the module kept the prior carried the latest estimate in
    ACTRefresh's state ("prior"); a resume puts it where it lives now, unless the module has one."""
    old_state = {"prior": {"class_ratios": torch.tensor([0.2, 0.8]), "boxes_per_image": 3.5}}
    act = ACTRefresh(prior="estimated")
    act.load_state_dict(old_state)
    module = SimpleNamespace(threshold_prior=None)
    act.on_train_start(None, module)
    assert module.threshold_prior.class_ratios.tolist() == pytest.approx([0.2, 0.8])
    assert module.threshold_prior.boxes_per_image == 3.5
    assert act.state_dict() == {}  # and the callback keeps no copy
    kept = ClassPrior(torch.tensor([0.6, 0.4]), 1.5)
    act.load_state_dict(old_state)
    module.threshold_prior = kept  # the module's own record wins
    act.on_train_start(None, module)
    assert module.threshold_prior is kept


def test_class_prior_plot_draws_the_three_priors_and_the_boxes_per_image() -> None:
    names = ["a", "b"]
    metrics = {"act/prior/a": ([8], [0.3]), "act/prior/b": ([8], [0.7])}
    metrics["act/prior/boxes_per_image"] = ([8, 16], [2.0, 2.5])
    assert plot_class_prior(metrics, names) is None  # a run with the labeled prior: no plot
    metrics.update({"act/labeled_prior/a": ([8], [0.9]), "act/labeled_prior/b": ([8], [0.1])})
    metrics["act/labeled_prior/boxes_per_image"] = ([8], [1.5])
    metrics.update({"act/unlabeled_prior/a": ([8], [0.2]), "act/unlabeled_prior/b": ([8], [0.8])})
    metrics["act/unlabeled_prior/boxes_per_image"] = ([8], [2.2])
    shares, boxes = plot_class_prior(metrics, names).axes
    heights = [[bar.get_height() for bar in group] for group in shares.containers]
    assert heights == [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]  # labeled, ACT's, truth; a then b
    assert [line.get_ydata()[0] for line in boxes.lines] == [2.0, 1.5, 2.2]


def test_calibration_biases_by_hand() -> None:
    # Two samples, posteriors (0.5, 0.5) and (0.8, 0.2), mean (0.65, 0.35); known prior (0.5,
    # 0.5). One step: b = (0.5 / 0.65, 0.5 / 0.35) = (10/13, 10/7); at the fixed point the
    # recalibrated mean is the prior.
    posteriors = torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    prior = torch.tensor([0.5, 0.5], dtype=torch.float64)
    one = calibration_biases(posteriors, torch.ones(2), prior, max_iterations=1)
    assert one.tolist() == pytest.approx([10 / 13, 10 / 7])
    biases = calibration_biases(posteriors, torch.ones(2), prior, 1000, 1e-12)
    adjusted = posteriors * biases
    assert (adjusted / adjusted.sum(1, keepdim=True)).mean(0).tolist() == pytest.approx([0.5, 0.5])
    # A class without posterior mass keeps its bias of 1.
    one_class = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert calibration_biases(one_class, torch.ones(2), prior)[1].item() == 1.0


def _miscalibrated(target: torch.Tensor, num: int, seed: int) -> TeacherDetections:
    """One object per image whose posteriors are the known model's distorted by per-class
    factors (a teacher over-confident for classes 1 and 4), with an object mass of 0.5 spread
    over its classes: the score sum counts half a box per object, on every set alike. Class-wise
    NMS keeps the row once per class, so each image has 4 detections of the same row."""
    exact = draw_posteriors(target, num, seed)
    distorted = exact * torch.tensor([3.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    distorted = distorted / distorted.sum(1, keepdim=True)
    rows = torch.cat([torch.full((num, 1), 0.5, dtype=torch.float64), 0.5 * distorted], dim=1)
    labels = torch.arange(1, 5).repeat(num)
    rows = rows.repeat_interleave(4, dim=0)
    scores = rows[torch.arange(4 * num), labels]
    return TeacherDetections(labels, scores.float(), rows.float(), num)


def test_calibration_on_labeled_images_undoes_a_class_bias_and_the_score_sums_miscount() -> None:
    labeled_prior = ClassPrior(LABELED, 1.0)  # one object per image on both sets
    labeled = _miscalibrated(LABELED, 4000, seed=7)
    unlabeled = _miscalibrated(REVERSED, 4000, seed=8)
    plain, _ = estimated_class_prior(unlabeled, labeled_prior, None, 1000, 1e-8)
    calibrated, _ = estimated_class_prior(unlabeled, labeled_prior, labeled, 1000, 1e-8)
    assert total_variation(plain.class_ratios, REVERSED) > 0.1  # EM fails on the distortion
    assert total_variation(calibrated.class_ratios, REVERSED) <= TOLERANCE_TV
    assert plain.boxes_per_image == pytest.approx(0.5, abs=0.01)  # half the objects
    # 1 box per image, plus at most 4 / 4000 from the "at least one box per class" rule
    assert calibrated.boxes_per_image == pytest.approx(1.0, abs=0.01)


def drawn_shares(target: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """The class shares `draw_posteriors(target, num, seed)` actually drew (its annotations)."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.multinomial(target.float(), num, replacement=True, generator=generator)
    return torch.bincount(classes, minlength=len(target)).double() / num


def test_a_calibration_split_the_teacher_did_not_train_on_undoes_what_the_labeled_pass_hides():
    """A teacher that has learnt its labeled images: exact posteriors there, distorted on every
    image it did not train on (the calibration split and the unlabeled images alike). Calibrated
    on the labeled pass the distortion stays; on the calibration split, with that split's own
    prior (`calibration_prior`, its drawn counts), it goes, whatever that prior is."""
    labeled_prior = ClassPrior(LABELED, 1.0)
    exact = draw_posteriors(LABELED, 4000, seed=7)
    rows = torch.cat([torch.full((4000, 1), 0.5, dtype=torch.float64), 0.5 * exact], dim=1)
    rows = rows.repeat_interleave(4, dim=0)
    labels = torch.arange(1, 5).repeat(4000)
    scores = rows[torch.arange(16000), labels].float()
    memorised = TeacherDetections(labels, scores, rows.float(), 4000)
    unlabeled = _miscalibrated(REVERSED, 4000, seed=8)
    truth = drawn_shares(REVERSED, 4000, seed=8)
    on_labeled, _ = estimated_class_prior(unlabeled, labeled_prior, memorised, 1000, 1e-8)
    assert total_variation(on_labeled.class_ratios, truth) > 0.1
    for calibration_shares, seed in ((LABELED, 9), (RISING, 10)):
        calibration = _miscalibrated(calibration_shares, 4000, seed=seed)
        calibration_prior = ClassPrior(drawn_shares(calibration_shares, 4000, seed), 1.0)
        estimate, _ = estimated_class_prior(
            unlabeled, labeled_prior, calibration, 1000, 1e-8, calibration_prior=calibration_prior
        )
        assert total_variation(estimate.class_ratios, truth) <= TOLERANCE_TV
        assert estimate.boxes_per_image == pytest.approx(1.0, abs=0.01)
    # Fitted to the labeled prior instead of its own, the RISING split misleads the biases.
    misread, _ = estimated_class_prior(unlabeled, labeled_prior, calibration, 1000, 1e-8)
    assert total_variation(misread.class_ratios, truth) > 0.1
