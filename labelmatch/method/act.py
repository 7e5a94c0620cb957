"""ACT: adaptive label-distribution-aware confidence thresholds (paper Eq. 4-6).

The labeled set fixes how many boxes of each class an image should hold (the class prior);
on a reference subset of R unlabeled images the teacher is expected to find
E_c = R · boxes_per_image · ratio_c boxes of class c, so the score at rank E_c of class c is
its uncertain threshold (Eq. 5) and the one at rank α·E_c its reliable threshold (Eq. 6); ranks
count from 0 as the official code indexes them (s_c[int(E_c)] is the (⌊E_c⌋ + 1)-th best).
Classes are contiguous 1..C (0 is background); per-class tensors are indexed 0..C-1.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from labelmatch.data.class_prior import ClassPrior, class_prior_from_counts
from labelmatch.errors import ConfigError


def labeled_class_prior(datamodule, manual: dict | None = None) -> ClassPrior:
    """The prior ACT aims at and the statistics compare with: the official `manual_prior`
    {"class_ratios": [C floats], "boxes_per_image": float} when given, else the datamodule's
    `labeled_class_prior` (the labeled set's annotation counts over its images, computed once:
    `DetectionDataModule.labeled_class_prior`, docs/method.md §2)."""
    if manual is not None:
        return ClassPrior.from_manual(manual["class_ratios"], manual["boxes_per_image"])
    return datamodule.labeled_class_prior


def unlabeled_class_prior(datamodule) -> ClassPrior:
    """The oracle prior: the unlabeled set's own annotation counts over its images
    (`DetectionDataModule.unlabeled_class_prior`), by the same rule as the labeled prior. For
    reference runs only (it reads annotations a semi-supervised method must not have); refused
    when there are none."""
    prior = datamodule.unlabeled_class_prior
    if prior is None:
        raise ValueError(
            "method.act.prior=oracle needs annotations in the unlabeled json; this one has none"
        )
    return prior


# What `method.act.prior` may name besides null (labeled counts) and a manual dict.
ESTIMATED, ORACLE = "estimated", "oracle"


def configured_prior(datamodule, setting: dict | str | None) -> ClassPrior:
    """The prior `method.act.prior` selects before any refresh: the labeled counts (null, and
    "estimated", which starts from them and is replaced at each ACT refresh), the manual
    {"class_ratios", "boxes_per_image"}, or "oracle" (`unlabeled_class_prior`)."""
    check_prior_setting(setting)
    if setting == ORACLE:
        return unlabeled_class_prior(datamodule)
    if setting is None or setting == ESTIMATED:
        return labeled_class_prior(datamodule)
    return labeled_class_prior(datamodule, setting)


def check_prior_setting(setting: Any) -> None:
    """ConfigError unless `setting` is one of `method.act.prior`'s forms (`configured_prior`);
    a manual prior's values are checked against the data when it is built."""
    if isinstance(setting, str) and setting not in (ESTIMATED, ORACLE):
        raise ConfigError(
            f"method.act.prior must be null, {{class_ratios, boxes_per_image}}, "
            f"{ESTIMATED!r} or {ORACLE!r}, got {setting!r}"
        )


# ------------------------------------------------------------------ estimated prior (ours)
# docs/method.md §2 "Estimated prior": under label shift (p(x | y) the same in the labeled and
# unlabeled sets, only p(y) differs), the teacher's class posteriors on the unlabeled images
# are re-weighted to the unknown unlabeled prior by the EM of Saerens, Latinne & Decaestecker
# (2002), and the boxes per image are the teacher's expected number of true detections.


def _reweighted(posteriors: Tensor, factors: Tensor) -> Tensor:
    """Rows of posteriors [N, C] multiplied by per-class factors [C] and renormalised; a row
    left without mass (all its classes at factor 0) stays 0 and so counts for nothing."""
    adjusted = posteriors * factors
    return adjusted / adjusted.sum(dim=1, keepdim=True).clamp(min=1e-300)


def _weighted_mean(rows: Tensor, weights: Tensor) -> Tensor:
    """Σ_i w_i rows_i / Σ_i w_i: [N, C], [N] -> [C]."""
    return (weights[:, None] * rows).sum(dim=0) / weights.sum()


def em_label_shift(
    posteriors: Tensor,
    weights: Tensor,
    source_prior: Tensor,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    start: Tensor | None = None,
) -> tuple[Tensor, int]:
    """The target prior under label shift, by EM (Saerens, Latinne & Decaestecker, 2002).

    posteriors: float[N, C], p_l(c | x_i), rows summing to 1, from a classifier trained under
        `source_prior`; weights: float[N] >= 0, how much sample i counts (1 for plain samples);
        source_prior: float[C] > 0, p_l(c), sums to 1.
    Starting from π⁰ = p_l, one iteration is
        q_i(c) = p_l(c | x_i) · π(c) / p_l(c)  /  Σ_k p_l(k | x_i) · π(k) / p_l(k)   (E step)
        π'(c)  = Σ_i w_i q_i(c) / Σ_i w_i                                         (M step)
    until max_c |π' − π| ≤ tolerance or `max_iterations`. Each iteration does not decrease the
    likelihood of the samples under π (Saerens et al., 2002, §2.3). A class no sample gives any
    posterior mass ends at share 0. Returns (π float64[C], summing to 1; iterations run).
    With no sample weight at all there is nothing to estimate from: π = p_l, 0 iterations.
    `start`: π⁰ instead of p_l (float[C], > 0, sums to 1); the likelihood is concave in π, so
    where EM converges within `max_iterations` the same maximum is reached, in fewer iterations
    from a nearby start (the shift test's resamples start from the estimate). Where the
    likelihood is flat (two classes the posteriors barely tell apart) EM may stop at the limit
    short of it, and a warm start then ends further along than a cold one.
    """
    posteriors = posteriors.detach().double()
    weights = weights.detach().double().flatten()
    source = torch.as_tensor(source_prior, dtype=torch.float64).flatten()
    if posteriors.ndim != 2 or posteriors.shape[1] != source.numel():
        raise ValueError(f"posteriors must be [N, {source.numel()}], got {tuple(posteriors.shape)}")
    if weights.numel() != posteriors.shape[0] or (weights < 0).any():
        raise ValueError(f"need {posteriors.shape[0]} weights >= 0, got {weights.numel()}")
    if (source <= 0).any() or abs(source.sum().item() - 1.0) > 1e-6:
        raise ValueError(f"source prior must be > 0 and sum to 1, got {source.tolist()}")
    if max_iterations < 1 or tolerance <= 0:
        raise ValueError(f"need max_iterations >= 1, tolerance > 0: {max_iterations}, {tolerance}")
    if weights.sum() <= 0:
        return source.clone(), 0
    prior = source.clone() if start is None else start.detach().double().flatten().clone()
    iterations, moved = 0, float("inf")
    while iterations < max_iterations and moved > tolerance:
        updated = _weighted_mean(_reweighted(posteriors, prior / source), weights)
        updated = updated / updated.sum()
        moved = (updated - prior).abs().max().item()
        prior, iterations = updated, iterations + 1
    return prior, iterations


@dataclass(frozen=True, eq=False)
class TeacherDetections:
    """The teacher's post-NMS detections on `num_images` images, as a refresh pass gives them.

    labels: int64[N] in 1..C; scores: float[N]; class_scores: float[N, C + 1], the softmax row
    (background first) of the proposal each detection comes from, so that
    `class_scores[i, labels[i]] == scores[i]`; image_index: int64[N] in 0..num_images-1, the
    image each detection is on (needed only by `label_shift_test`, which resamples images).
    """

    labels: Tensor
    scores: Tensor
    class_scores: Tensor
    num_images: int
    image_index: Tensor | None = None

    def weighted_posteriors(self, num_classes: int) -> tuple[Tensor, Tensor]:
        """(posteriors float64[N, C], weights float64[N]) on the CPU: each detection's foreground
        row renormalised, p(c | x_i) = class_scores[i, c] / Σ_{k ≥ 1} class_scores[i, k], and
        its score as its weight (how likely it is an object at all)."""
        labels, scores, rows = (
            t.detach().cpu() for t in (self.labels, self.scores, self.class_scores)
        )
        _check_detections(labels, scores, num_classes)
        if rows.shape != (labels.numel(), num_classes + 1):
            raise ValueError(
                f"class_scores must be [{labels.numel()}, {num_classes + 1}], "
                f"got {tuple(rows.shape)}"
            )
        if self.num_images <= 0:
            raise ValueError(f"number of images must be positive, got {self.num_images}")
        foreground = rows.double()[:, 1:]
        posteriors = foreground / foreground.sum(dim=1, keepdim=True).clamp(min=1e-300)
        return posteriors, scores.double().flatten()

    def scoring_at_least(self, min_score: float) -> "TeacherDetections":
        """The detections whose score is >= `min_score`, on the same images."""
        keep = self.scores >= min_score
        index = (
            None if self.image_index is None else self.image_index[keep.to(self.image_index.device)]
        )
        return TeacherDetections(
            self.labels[keep], self.scores[keep], self.class_scores[keep], self.num_images, index
        )

    def image_multiplicities(self, generator: torch.Generator) -> Tensor:
        """float64[N]: how often each detection's image is drawn when `num_images` images are
        drawn with replacement from them (a bootstrap resample, each image with all its
        detections)."""
        if self.image_index is None:
            raise ValueError("resampling images needs each detection's image_index")
        index = self.image_index.detach().cpu().long()
        if index.shape != self.scores.shape or (
            index.numel() and (index.min() < 0 or index.max() >= self.num_images)
        ):
            raise ValueError(
                f"image_index must be [{self.scores.numel()}] in 0..{self.num_images - 1}"
            )
        drawn = torch.randint(self.num_images, (self.num_images,), generator=generator)
        return torch.bincount(drawn, minlength=self.num_images).double()[index]


def calibration_biases(
    posteriors: Tensor,
    weights: Tensor,
    prior: Tensor,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    start: Tensor | None = None,
) -> Tensor:
    """Per-class biases b float64[C] that make the posteriors agree with a known prior.

    posteriors: float[N, C], rows summing to 1, on images whose class prior is known;
    weights: float[N] >= 0; prior: float[C], the known prior (sums to 1).
    With q_i(c) = p(c | x_i) b_c / Σ_k p(k | x_i) b_k and m(b) = Σ_i w_i q_i / Σ_i w_i, iterate
        b ← b · prior / m(b)
    from b = 1 until max_c |m(b) − prior| ≤ tolerance or `max_iterations`. These are the class
    biases of the bias-corrected calibration of Alexandari, Kundaje & Shrikumar (2020), who show
    that the EM of Saerens et al. (2002) fails without them; fitted here by matching the known
    prior rather than by the likelihood of per-box labels, so no detection needs to be matched
    to a ground-truth box. A class without any posterior mass keeps b = 1 (nothing to fit).
    `start`: the biases to iterate from instead of 1 (float[C] > 0; the shift test's resamples
    start from the fit on all images).
    """
    posteriors = posteriors.detach().double()
    weights = weights.detach().double().flatten()
    prior = torch.as_tensor(prior, dtype=torch.float64).flatten()
    biases = torch.ones(posteriors.shape[1], dtype=torch.float64)
    if start is not None:
        biases = start.detach().double().flatten().clone()
    if weights.sum() <= 0:
        return biases
    for _ in range(max_iterations):
        mean = _weighted_mean(_reweighted(posteriors, biases), weights)
        if (mean - prior).abs().max().item() <= tolerance:
            break
        biases = torch.where(mean > 0, biases * prior / mean.clamp(min=1e-300), biases)
    return biases


def estimated_class_prior(
    unlabeled: TeacherDetections,
    labeled_prior: ClassPrior,
    calibration: TeacherDetections | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    min_score: float = 0.0,
    calibration_prior: ClassPrior | None = None,
) -> tuple[ClassPrior, int]:
    """The unlabeled set's prior from the teacher's detections on its R reference images.

    `calibration`: the same pass on images of known prior: the labeled images, with
    `calibration_prior` None (their prior is `labeled_prior`), or a calibration split the
    teacher never trains on, whose prior is `calibration_prior`; None calibrates nothing.
    S = Σ_i scores_i / images, the teacher's score sum per image, on either set; B_l, the
    calibration images' known boxes per image (l for labeled, the default calibration images;
    docs/method.md §2 keeps the letter).
    - Boxes per image: B_u = S_u. If a detection's score is the probability that it is a true
      box of its class and every object keeps exactly one true detection after NMS (recall 1 at
      the refresh pass's 0.001 floor, no same-class duplicate), Σ_i scores_i is the expected
      number of objects. With `calibration`: B_u = B_l · S_u / S_l, which assumes only that the
      score sum miscounts the objects by the same factor on both sets (a teacher whose low
      scores add up to phantom boxes does so on known and unlabeled images alike).
    - Class shares: `em_label_shift` over the unlabeled detections (`weighted_posteriors`:
      foreground rows renormalised, weighted by score), from the labeled prior. With
      `calibration`, the posteriors are first multiplied by `calibration_biases` fitted on its
      detections to the known prior (and renormalised), and the EM starts from and re-weights
      against the known shares, the prior the re-biased posteriors then stand for.
    The expected counts n_c = R · B_u · π_c then go through `class_prior_from_counts`, so a
    class the estimate empties still counts as 1 box (the labeled counts' rule). No unlabeled
    detection: the labeled prior, 0 iterations. Returns (prior, EM iterations).

    `min_score` > 0 keeps only the detections scoring at least that much, on both sets, before
    anything above (`method.act.estimator.min_score`, 0.3 in training; 0 keeps the whole pass):
    low-score clutter then neither votes on the shares nor adds to the score sums. Without
    `calibration`, B_u = S_u then misses the objects found only below the floor; calibrated, the
    ratio S_u / S_l is taken above the same floor on both sets.
    """
    estimator = _PriorEstimator.of(
        unlabeled, labeled_prior, calibration, calibration_prior, min_score
    )
    if estimator is None:
        return labeled_prior, 0
    prior, iterations, _ = estimator.estimate(max_iterations, tolerance)
    return prior, iterations


@dataclass(frozen=True, eq=False)
class _PriorEstimator:
    """`estimated_class_prior`'s inputs in the form it computes with (after the score floor):
    posteriors float64[N, C] and weights float64[N] of the unlabeled detections, and of the
    calibration detections when there are any (`known_*`, fitted to `source`, the known prior),
    so that `label_shift_test` can run it again with every weight multiplied by how often its
    image is drawn."""

    unlabeled: TeacherDetections
    posteriors: Tensor
    weights: Tensor
    source: ClassPrior  # the prior EM starts from and re-weights against
    calibration: TeacherDetections | None = None
    known_posteriors: Tensor | None = None
    known_weights: Tensor | None = None

    @classmethod
    def of(
        cls,
        unlabeled: TeacherDetections,
        labeled_prior: ClassPrior,
        calibration: TeacherDetections | None,
        calibration_prior: ClassPrior | None,
        min_score: float,
    ) -> "_PriorEstimator | None":
        """None when no unlabeled detection reaches `min_score` (nothing to estimate from)."""
        if min_score > 0:
            unlabeled = unlabeled.scoring_at_least(min_score)
            if calibration is not None:
                calibration = calibration.scoring_at_least(min_score)
        posteriors, weights = unlabeled.weighted_posteriors(labeled_prior.num_classes)
        if weights.sum() <= 0:
            return None
        if calibration is not None:
            known_posteriors, known_weights = calibration.weighted_posteriors(
                labeled_prior.num_classes
            )
            if known_weights.sum() > 0:
                source = labeled_prior if calibration_prior is None else calibration_prior
                return cls(
                    unlabeled, posteriors, weights, source,
                    calibration, known_posteriors, known_weights,
                )  # fmt: skip
        return cls(unlabeled, posteriors, weights, labeled_prior)

    def estimate(
        self,
        max_iterations: int,
        tolerance: float,
        multiplicities: Tensor | None = None,
        known_multiplicities: Tensor | None = None,
        start: tuple[Tensor, Tensor | None] | None = None,
    ) -> tuple[ClassPrior, int, tuple[Tensor, Tensor | None]]:
        """(prior, EM iterations, (shares, biases) to warm-start a resample from), with each
        unlabeled / calibration weight multiplied by `multiplicities` / `known_multiplicities`
        (float64[N] each; None: 1)."""
        weights = self.weights if multiplicities is None else self.weights * multiplicities
        posteriors, biases = self.posteriors, None
        boxes_per_image = weights.sum().item() / self.unlabeled.num_images
        if self.calibration is not None:
            known_weights = self.known_weights
            if known_multiplicities is not None:
                known_weights = known_weights * known_multiplicities
            biases = calibration_biases(
                self.known_posteriors,
                known_weights,
                self.source.class_ratios,
                max_iterations,
                tolerance,
                start=None if start is None else start[1],
            )
            posteriors = _reweighted(posteriors, biases)
            known_sum = known_weights.sum().item() / self.calibration.num_images
            boxes_per_image *= self.source.boxes_per_image / max(known_sum, 1e-300)
        shares, iterations = em_label_shift(
            posteriors,
            weights,
            self.source.class_ratios,
            max_iterations,
            tolerance,
            start=None if start is None else start[0],
        )
        counts = self.unlabeled.num_images * boxes_per_image * shares
        prior = class_prior_from_counts(counts, self.unlabeled.num_images)
        return prior, iterations, (shares, biases)


@dataclass(frozen=True, eq=False)
class LabelShiftTest:
    """The outcome of `label_shift_test`: z float64[C], each class's estimated share minus its
    labeled share over the bootstrap standard deviation of the estimate; `critical`, the bound
    |z_c| must pass for some class for a shift to be detected."""

    z: Tensor
    critical: float

    @property
    def statistic(self) -> float:
        """max_c |z_c|."""
        return self.z.abs().max().item()

    @property
    def detected(self) -> bool:
        return self.statistic > self.critical


def label_shift_test(
    unlabeled: TeacherDetections,
    labeled_prior: ClassPrior,
    generator: torch.Generator,
    calibration: TeacherDetections | None = None,
    calibration_prior: ClassPrior | None = None,
    level: float = 0.05,
    resamples: int = 200,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    min_score: float = 0.0,
) -> LabelShiftTest:
    """Does `estimated_class_prior` on the same arguments differ from the labeled prior by more
    than the estimate's own noise? (docs/method.md §2 "Shift test", ours.)

    The estimate is computed again `resamples` times, each time on the unlabeled reference
    images and the calibration images drawn with replacement (each image with all its
    detections: `image_index` is needed on both), warm-started from the estimate's own EM
    shares and biases. With sd_c the standard deviation of class c's share over the resamples,
        z_c = (estimate_c − labeled_c) / sd_c,
    and a shift is detected when max_c |z_c| > Φ⁻¹(1 − level / (2C)): a two-sided test per
    class, Bonferroni over the C classes, the aggregation Rabanser et al. (2019) use to detect
    shift from a classifier's outputs (black-box shift detection, Lipton et al., 2018). The
    labeled prior is held fixed: with the labeled images as calibration images (the default) its
    sampling noise enters through the calibration biases fitted to it; with a calibration split
    it does not, and the test detects a shift more readily. A class whose share no resample
    moves has sd 0: z 0 if its estimate equals its labeled share, else infinite. No unlabeled
    detection at the score floor: nothing is estimated, z = 0.
    """
    num_classes = labeled_prior.num_classes
    if not 0 < level < 1 or resamples < 2:
        raise ValueError(f"need 0 < level < 1 and resamples >= 2, got {level} and {resamples}")
    critical = (
        torch.distributions.Normal(0.0, 1.0)
        .icdf(torch.tensor(1 - level / (2 * num_classes), dtype=torch.float64))
        .item()
    )
    estimator = _PriorEstimator.of(
        unlabeled, labeled_prior, calibration, calibration_prior, min_score
    )
    if estimator is None:
        return LabelShiftTest(torch.zeros(num_classes, dtype=torch.float64), critical)
    estimate, _, start = estimator.estimate(max_iterations, tolerance)
    shares = []
    for _ in range(resamples):
        multiplicities = estimator.unlabeled.image_multiplicities(generator)
        known = None
        if estimator.calibration is not None:
            known = estimator.calibration.image_multiplicities(generator)
        again, _, _ = estimator.estimate(max_iterations, tolerance, multiplicities, known, start)
        shares.append(again.class_ratios)
    deviation = estimate.class_ratios - labeled_prior.class_ratios
    spread = torch.stack(shares).std(dim=0)
    z = torch.where(
        spread > 0,
        deviation / spread.clamp(min=1e-300),
        torch.where(deviation == 0, 0.0, torch.inf * deviation.sign()),
    )
    return LabelShiftTest(z, critical)


def scores_by_class(labels: Tensor, scores: Tensor, num_classes: int) -> list[Tensor]:
    """Splits detection scores by class.

    labels: int64[N] in 1..num_classes; scores: float[N]. Returns C tensors, entry c-1 holding
    the scores of class c.
    """
    _check_detections(labels, scores, num_classes)
    return [scores[labels == c] for c in range(1, num_classes + 1)]


def _check_detections(labels: Tensor, scores: Tensor, num_classes: int) -> None:
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(
            f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} must be 1-D, equal"
        )
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"labels must lie in 1..{num_classes}, got range "
            f"{labels.min().item()}..{labels.max().item()}"
        )


def act_thresholds(
    scores_per_class: Sequence[Tensor],
    num_images: int,
    prior: ClassPrior,
    alpha: float = 0.2,
    min_threshold: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Per-class (reliable, uncertain) thresholds, each float32[C] on the CPU (Eq. 5-6).

    scores_per_class: C tensors of the teacher's post-NMS scores on `num_images` reference images.
    With s_c those scores sorted descending ([0.0] if none):
      reliable_c  = max(min_threshold, s_c[min(int(E_c · alpha), len(s_c) − 1)])
      uncertain_c = max(min_threshold, s_c[min(int(E_c), len(s_c) − 1)])
    alpha = 0 takes the top score; ranks past the end clamp to the lowest score (official code).
    Official defaults: alpha = 0.2 (the paper's α = 20 %), floor 0.05.
    """
    if len(scores_per_class) != prior.num_classes:
        raise ValueError(
            f"got scores for {len(scores_per_class)} classes, prior has {prior.num_classes}"
        )
    if num_images <= 0 or alpha < 0:
        raise ValueError(f"need num_images > 0 and alpha >= 0, got {num_images} and {alpha}")
    expected = prior.expected_boxes(num_images).tolist()
    reliable, uncertain = [], []
    for scores, expected_c in zip(scores_per_class, expected):
        ranked = scores.detach().flatten().float().cpu().sort(descending=True).values
        if ranked.numel() == 0:
            ranked = torch.zeros(1)
        last = ranked.numel() - 1
        reliable.append(ranked[min(int(expected_c * alpha), last)])
        uncertain.append(ranked[min(int(expected_c), last)])
    return (
        torch.stack(reliable).clamp(min=min_threshold),
        torch.stack(uncertain).clamp(min=min_threshold),
    )


# ----------------------------------------------------------------------------------- online ACT
# The official online variant (docs/method.md §2) keeps, instead of a refresh pass every K steps,
# a queue of the teacher's scores on the pseudo-labelling batches themselves: the top 20 scores
# per class of each of the last 12,800 images, gathered over all ranks; the thresholds are
# Eq. 5-6 on the queue, with R = the images it holds.
QUEUE_PADDING = -1.0  # marks "no detection" in a per-class top-k row (scores lie in [0, 1])


def top_scores_per_class(labels: Tensor, scores: Tensor, num_classes: int, k: int) -> Tensor:
    """The k best scores of each class in one image, float32[C, k], descending, padded with
    QUEUE_PADDING where a class has fewer than k detections.

    labels: int64[N] in 1..num_classes; scores: float[N] (post-NMS detections of one image).
    """
    _check_detections(labels, scores, num_classes)
    # One [C, N] matrix holding each detection in its class row: a single topk for all classes.
    by_class = scores.new_full((num_classes, scores.numel()), QUEUE_PADDING)
    by_class[labels - 1, torch.arange(scores.numel(), device=scores.device)] = scores.detach()
    best = by_class.topk(min(k, scores.numel()), dim=1).values
    top = scores.new_full((num_classes, k), QUEUE_PADDING)
    top[:, : best.shape[1]] = best
    return top.float()


def top_scores_per_image(
    detections: Sequence[dict[str, Tensor]], num_classes: int, k: int
) -> Tensor:
    """`top_scores_per_class` of each image's detections ({"labels", "scores"}), stacked:
    float32[B, C, k], the rows `ScoreQueue.push` takes (B = 0 for no image)."""
    rows = [top_scores_per_class(d["labels"], d["scores"], num_classes, k) for d in detections]
    return torch.stack(rows) if rows else torch.full((0, num_classes, k), QUEUE_PADDING)


class ScoreQueue:
    """A bounded FIFO of per-image, per-class top-k teacher scores (online ACT's memory).

    scores: float32[C, capacity, k]; image slots are filled in ring order and `num_images` of
    them are valid (all once the queue has wrapped). Class-major, so that one class's scores
    are one contiguous row. Lives on the CPU: it is small (80 x 12,800 x 20 floats for COCO,
    82 MB) and the thresholds are computed there anyway.
    """

    def __init__(self, capacity: int, num_classes: int, top_k: int) -> None:
        if capacity < 1 or num_classes < 1 or top_k < 1:
            raise ValueError(
                f"need capacity, num_classes, top_k >= 1, got {capacity}, {num_classes}, {top_k}"
            )
        self.scores = torch.full((num_classes, capacity, top_k), QUEUE_PADDING)
        self.next_slot = 0
        self.num_images = 0

    @property
    def capacity(self) -> int:
        return self.scores.shape[1]

    @property
    def top_k(self) -> int:
        return self.scores.shape[2]

    def push(self, top: Tensor) -> None:
        """Appends images' rows float[B, C, k] (see `top_scores_per_class`), dropping the oldest
        images beyond the capacity."""
        num_classes, _, top_k = self.scores.shape
        if top.ndim != 3 or top.shape[1:] != (num_classes, top_k):
            raise ValueError(
                f"queue rows must be [B, {num_classes}, {top_k}], got {tuple(top.shape)}"
            )
        top = top[-self.capacity :].detach().float().cpu()
        slots = (self.next_slot + torch.arange(len(top))) % self.capacity
        self.scores[:, slots] = top.transpose(0, 1)
        self.next_slot = (self.next_slot + len(top)) % self.capacity
        self.num_images = min(self.num_images + len(top), self.capacity)

    def scores_per_class(self, limits: Sequence[int] | None = None) -> list[Tensor]:
        """C tensors of the queued scores of each class, padding removed, for `act_thresholds`
        with num_images = `self.num_images`. With `limits`, only the best limits[c] scores of
        class c: enough for Eq. 5-6, whose largest rank is int(E_c), and much cheaper to sort
        than the whole queue."""
        filled = self.scores[:, : self.num_images].reshape(self.scores.shape[0], -1)
        if limits is None:
            return [row[row >= 0] for row in filled]
        best = [row.topk(min(int(limit), row.numel())).values for row, limit in zip(filled, limits)]
        return [row[row >= 0] for row in best]

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "next_slot": self.next_slot, "num_images": self.num_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["scores"]
        if (saved.shape[0], saved.shape[2]) != (self.scores.shape[0], self.top_k):
            raise ValueError(
                f"checkpointed ACT queue holds {saved.shape[0]} classes x top {saved.shape[2]}, "
                f"this run {self.scores.shape[0]} x top {self.top_k}"
            )
        self.scores = saved.clone()
        self.next_slot = int(state["next_slot"])
        self.num_images = int(state["num_images"])


def online_act_thresholds(
    queue: ScoreQueue, prior: ClassPrior, alpha: float = 0.2, min_threshold: float = 0.05
) -> tuple[Tensor, Tensor]:
    """Eq. 5-6 on the queued scores, R = the images in the queue: exactly `act_thresholds` on
    them, reading only the top int(E_c) + 1 scores of each class."""
    num_images = max(queue.num_images, 1)
    limits = [int(e) + 1 for e in prior.expected_boxes(num_images).tolist()]
    return act_thresholds(queue.scores_per_class(limits), num_images, prior, alpha, min_threshold)
