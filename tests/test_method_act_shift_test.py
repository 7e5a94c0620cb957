"""The estimated prior's shift test (docs/method.md §2 "Shift test"): the estimate is used only
where it differs from the labeled prior by more than its own bootstrap noise. Constructed
teacher passes (tests/test_method_act_estimated.py's known posterior model) with and without a
shift, the critical value, the resampling, and the refresh that keeps the labeled prior."""

import logging
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import labelmatch.callbacks.act_refresh as act_refresh
from labelmatch.callbacks.act_refresh import ACTRefresh, image_index_of
from labelmatch.errors import ConfigError
from labelmatch.method.act import (
    ClassPrior,
    LabelShiftTest,
    TeacherDetections,
    em_label_shift,
    estimated_class_prior,
    label_shift_test,
)
from tests.conftest import REPO
from tests.test_method_act_estimated import (
    LABELED,
    REVERSED,
    _miscalibrated,
    draw_posteriors,
    drawn_shares,
)


def with_images(detections: TeacherDetections) -> TeacherDetections:
    """`_miscalibrated`'s detections (4 per image, in image order) with their image_index."""
    index = torch.arange(detections.num_images).repeat_interleave(4)
    return TeacherDetections(
        detections.labels,
        detections.scores,
        detections.class_scores,
        detections.num_images,
        index,
    )


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_critical_value_is_the_bonferroni_normal_quantile() -> None:
    # Phi^-1(1 - 0.05 / (2 * 4)) = Phi^-1(0.99375) = 2.4977 and Phi^-1(1 - 0.05 / 20) =
    # Phi^-1(0.9975) = 2.8070 (normal tables); no detection at all: z = 0, nothing detected.
    empty = TeacherDetections(
        torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 5), 3, torch.zeros(0)
    )
    four = label_shift_test(empty, ClassPrior(LABELED, 1.0), seeded(0))
    assert four.critical == pytest.approx(2.4977, abs=1e-4)
    assert four.z.tolist() == [0.0] * 4 and not four.detected
    ten = ClassPrior(torch.full((10,), 0.1, dtype=torch.float64), 1.0)
    empty_ten = TeacherDetections(
        torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 11), 3, torch.zeros(0)
    )
    assert label_shift_test(empty_ten, ten, seeded(0)).critical == pytest.approx(2.8070, abs=1e-4)
    assert LabelShiftTest(torch.tensor([0.5, -3.0]), 2.5).statistic == 3.0
    assert LabelShiftTest(torch.tensor([0.5, -3.0]), 2.5).detected
    assert not LabelShiftTest(torch.tensor([0.5, -2.5]), 2.5).detected  # strictly above


def test_image_multiplicities_resample_whole_images() -> None:
    # 3 images; detections on images 0, 0 and 2: each carries how often its image is drawn.
    detections = TeacherDetections(
        torch.tensor([1, 2, 1]),
        torch.tensor([0.9, 0.8, 0.7]),
        torch.zeros(3, 3),
        3,
        torch.tensor([0, 0, 2]),
    )
    drawn = torch.randint(3, (3,), generator=seeded(5))
    expected = torch.bincount(drawn, minlength=3).double()[torch.tensor([0, 0, 2])]
    assert detections.image_multiplicities(seeded(5)).tolist() == expected.tolist()
    # over many resamples an image is drawn once on average
    many = torch.stack([detections.image_multiplicities(seeded(s)) for s in range(4000)])
    assert many.mean(0).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.07)  # 5 SE
    assert (many[:, 0] == many[:, 1]).all()  # the two detections of image 0 go together
    # the score floor keeps each kept detection's image
    kept = detections.scoring_at_least(0.75)
    assert kept.image_index.tolist() == [0, 0]
    with pytest.raises(ValueError, match="needs each detection's image_index"):
        TeacherDetections(
            torch.tensor([1]), torch.tensor([0.5]), torch.zeros(1, 3), 1
        ).image_multiplicities(seeded(0))
    with pytest.raises(ValueError, match=r"image_index must be \[1\] in 0..0"):
        TeacherDetections(
            torch.tensor([1]), torch.tensor([0.5]), torch.zeros(1, 3), 1, torch.tensor([1])
        ).image_multiplicities(seeded(0))


def test_no_shift_keeps_quiet_and_a_shift_is_detected() -> None:
    """A teacher over-confident for classes 1 and 4 on every image set, calibrated on 300
    labeled images of the labeled prior (their drawn counts): unlabeled images of the same prior
    give an estimate within its noise (every |z| well under the bound); of the reversed prior,
    a shift far beyond it, in the right direction (class 1 falls from 0.55 to 0.05, class 4
    rises from 0.05 to 0.55)."""
    labeled_prior = ClassPrior(drawn_shares(LABELED, 300, 7), 1.0)
    labeled = with_images(_miscalibrated(LABELED, 300, seed=7))
    same = with_images(_miscalibrated(LABELED, 600, seed=8))
    quiet = label_shift_test(same, labeled_prior, seeded(0), labeled, resamples=100)
    assert quiet.statistic < 2.0 < quiet.critical and not quiet.detected
    shifted = with_images(_miscalibrated(REVERSED, 600, seed=8))
    loud = label_shift_test(shifted, labeled_prior, seeded(0), labeled, resamples=100)
    assert loud.detected and loud.statistic > 2 * loud.critical
    assert loud.z[0] < -loud.critical and loud.z[3] > loud.critical
    # The same generator seed gives the same test; another seed moves it a little.
    again = label_shift_test(same, labeled_prior, seeded(0), labeled, resamples=100)
    assert torch.equal(again.z, quiet.z)
    other = label_shift_test(same, labeled_prior, seeded(1), labeled, resamples=100)
    assert not torch.equal(other.z, quiet.z)
    assert other.z.tolist() == pytest.approx(quiet.z.tolist(), rel=0.3, abs=0.3)


def test_the_spread_grows_as_the_calibration_images_get_fewer() -> None:
    """The labeled prior's own sampling noise enters through the calibration: with 30 labeled
    images instead of 300 the same unlabeled estimate has a wider spread (every class's), so the
    same gap is smaller in z."""
    unlabeled = with_images(_miscalibrated(REVERSED, 600, seed=8))
    spreads = []
    for num in (300, 30):
        labeled_prior = ClassPrior(drawn_shares(LABELED, num, 7).clamp(min=1 / num), 1.0)
        labeled_prior = ClassPrior(
            labeled_prior.class_ratios / labeled_prior.class_ratios.sum(), 1.0
        )
        labeled = with_images(_miscalibrated(LABELED, num, seed=7))
        estimate, _ = estimated_class_prior(unlabeled, labeled_prior, labeled)
        test = label_shift_test(unlabeled, labeled_prior, seeded(0), labeled, resamples=100)
        spreads.append((estimate.class_ratios - labeled_prior.class_ratios) / test.z)
    assert (spreads[1] > 1.3 * spreads[0]).all()


def test_the_level_and_resamples_are_checked() -> None:
    unlabeled = with_images(_miscalibrated(REVERSED, 10, seed=8))
    labeled_prior = ClassPrior(LABELED, 1.0)
    with pytest.raises(ValueError, match="need 0 < level < 1 and resamples >= 2"):
        label_shift_test(unlabeled, labeled_prior, seeded(0), level=0.0)
    with pytest.raises(ValueError, match="need 0 < level < 1 and resamples >= 2"):
        label_shift_test(unlabeled, labeled_prior, seeded(0), resamples=1)


def exact(target: torch.Tensor, num: int, seed: int) -> TeacherDetections:
    """`_miscalibrated` without the distortion: the exact posteriors under LABELED, an object
    mass of 0.5, 4 detections per image (one per class)."""
    posteriors = draw_posteriors(target, num, seed)
    rows = torch.cat([torch.full((num, 1), 0.5, dtype=torch.float64), 0.5 * posteriors], dim=1)
    rows = rows.repeat_interleave(4, dim=0)
    labels = torch.arange(1, 5).repeat(num)
    scores = rows[torch.arange(4 * num), labels]
    index = torch.arange(num).repeat_interleave(4)
    return TeacherDetections(labels, scores.float(), rows.float(), num, index)


def refresh_estimate(
    unlabeled: TeacherDetections, labeled_prior: ClassPrior, level: float | None
) -> tuple[ClassPrior, ACTRefresh, dict]:
    """One refresh's `estimate_prior` (one process, no calibration pass) with the shift test at
    `level`; (the prior ACT aims at, the callback, what it logged)."""
    act = ACTRefresh(
        prior="estimated", estimator_calibrate=False, estimator_min_score=0.0,
        shift_test_level=level, shift_test_resamples=50,
    )  # fmt: skip
    act.labeled_prior = act.prior = labeled_prior
    logged: dict = {}
    trainer = SimpleNamespace(world_size=1, datamodule=SimpleNamespace(seed=3))
    module = SimpleNamespace(
        global_step=8,
        log_event=logged.update,
        hparams=SimpleNamespace(class_names=["a", "b", "c", "d"]),
    )
    detections = [
        {
            "labels": unlabeled.labels[4 * i : 4 * i + 4],
            "scores": unlabeled.scores[4 * i : 4 * i + 4],
            "class_scores": unlabeled.class_scores[4 * i : 4 * i + 4],
        }
        for i in range(unlabeled.num_images)
    ]
    prior = act.estimate_prior(
        trainer, module, detections, unlabeled.labels, unlabeled.scores, unlabeled.num_images
    )
    return prior, act, logged


def test_a_refresh_keeps_the_labeled_prior_unless_the_test_detects_a_shift(caplog) -> None:
    """Uncalibrated, on exact posteriors: the estimate's spread is the unlabeled images' own
    sampling noise. 400 images of the labeled prior: the labeled prior itself is returned; of
    the reversed one: the estimate, exactly what the untested refresh returns."""
    labeled_prior = ClassPrior(LABELED, 1.0)
    same, shifted = exact(LABELED, 400, seed=8), exact(REVERSED, 400, seed=8)
    with caplog.at_level(logging.INFO, logger="labelmatch.callbacks.act_refresh"):
        kept, _, logged = refresh_estimate(same, labeled_prior, 0.05)
    assert kept is labeled_prior
    assert logged["act/shift_test/detected"] == 0.0
    assert 0 < logged["act/shift_test/statistic"] <= logged["act/shift_test/critical"]
    estimate, _ = estimated_class_prior(same, labeled_prior)  # logged though not aimed at
    assert logged["act/estimated_prior/a"] == pytest.approx(estimate.class_ratios[0].item())
    assert "ACT keeps the labeled prior" in caplog.text
    untested, _, logged = refresh_estimate(shifted, labeled_prior, None)
    assert "act/shift_test/detected" not in logged and "act/estimated_prior/a" not in logged
    with caplog.at_level(logging.INFO, logger="labelmatch.callbacks.act_refresh"):
        used, _, logged = refresh_estimate(shifted, labeled_prior, 0.05)
    assert logged["act/shift_test/detected"] == 1.0
    assert torch.equal(used.class_ratios, untested.class_ratios)
    assert used.boxes_per_image == untested.boxes_per_image
    assert "ACT aims at the estimate" in caplog.text


def test_shift_test_options_are_checked_where_given() -> None:
    for level in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="shift_test_level must be null or lie in"):
            ACTRefresh(prior="estimated", shift_test_level=level)
    for resamples in (1, 0, 2.5):
        with pytest.raises(ConfigError, match="shift_test_resamples must be a whole number"):
            ACTRefresh(prior="estimated", shift_test_resamples=resamples)


def test_image_index_follows_the_ranks_gathered_order(monkeypatch) -> None:
    """Under DDP each rank's detections are gathered rank after rank (`gather_rows`); so are
    the per-image counts the index is built from. Rank 0 holds images with 2, 0 and 1
    detections, rank 1 (stood in for here) images with 1 and 3: seven detections on five
    images, image 1 empty."""
    other_rank = {"counts": torch.tensor([1, 3])}
    monkeypatch.setattr(
        act_refresh, "gather_rows", lambda trainer, rows: torch.cat([rows, other_rank["counts"]])
    )
    detections = [{"labels": torch.ones(n, dtype=torch.long)} for n in (2, 0, 1)]
    trainer = SimpleNamespace(world_size=2)
    assert image_index_of(trainer, detections).tolist() == [0, 0, 2, 3, 4, 4, 4]
    other_rank["counts"] = torch.zeros(0, dtype=torch.long)  # a rank without images
    assert image_index_of(trainer, detections).tolist() == [0, 0, 2]
    assert image_index_of(None, []).tolist() == []


def test_a_warm_start_from_the_estimate_reaches_the_same_shares() -> None:
    posteriors = exact(REVERSED, 400, seed=8).weighted_posteriors(4)[0]
    weights = torch.ones(len(posteriors))
    cold, cold_iterations = em_label_shift(posteriors, weights, LABELED, 1000, 1e-10)
    warm, warm_iterations = em_label_shift(posteriors, weights, LABELED, 1000, 1e-10, start=cold)
    assert cold_iterations > 10 and warm_iterations <= 2
    assert warm.tolist() == pytest.approx(cold.tolist(), abs=1e-8)


def test_the_shift_test_is_on_by_default_and_logs_a_refresh_without_detections() -> None:
    # 0.05 since #17's targets passed with it (docs/benchmarks.md): the config's default is the
    # callback's; like every estimator setting it is read only with prior=estimated, so a run
    # with another prior takes the default without complaint.
    method = OmegaConf.load(REPO / "conf" / "method" / "labelmatch.yaml")
    assert method.act.estimator.shift_test_level == ACTRefresh().shift_test_level == 0.05
    for prior in (None, "oracle", {"class_ratios": [1, 1], "boxes_per_image": 2.0}):
        assert ACTRefresh(prior=prior).shift_test_level == 0.05
    # No detection at the estimator's floor: nothing to test, the labeled prior, not detected.
    labeled_prior = ClassPrior(LABELED, 1.0)
    faint = exact(LABELED, 10, seed=8)
    faint = TeacherDetections(
        faint.labels, faint.scores * 0.01, faint.class_scores * 0.01, 10, faint.image_index
    )
    act = ACTRefresh(
        prior="estimated", estimator_calibrate=False, estimator_min_score=0.3,
        shift_test_level=0.05,
    )  # fmt: skip
    act.labeled_prior = act.prior = labeled_prior
    logged: dict = {}
    trainer = SimpleNamespace(world_size=1, datamodule=SimpleNamespace(seed=3))
    module = SimpleNamespace(global_step=8, log_event=logged.update)
    detections = [{"labels": faint.labels[4 * i : 4 * i + 4]} for i in range(10)]
    for detection, i in zip(detections, range(10)):
        detection["class_scores"] = faint.class_scores[4 * i : 4 * i + 4]
    prior = act.estimate_prior(trainer, module, detections, faint.labels, faint.scores, 10)
    assert prior is labeled_prior
    assert logged == {"act/shift_test/statistic": 0.0, "act/shift_test/detected": 0.0}
