"""Issue #17, which label-shift estimator: the teacher of each given run folder
(`checkpoints/last.ckpt`) predicts on every unlabeled and labeled image of the run's experiment
as an ACT refresh pass does (score floor 0.001, each detection's softmax row kept), and the class
shares of the shipped estimator (calibrated EM, with and without its score floor) and of its
alternatives are compared with the unlabeled images' true shares (total variation, TV; no
training, about 20 s a digits run on one CPU thread):

    python benchmarks/prior_estimators.py outputs/bench-quality/digits_shift_uniform/labelmatch-s*

The experiment is the run folder's parent's name (`outputs/bench-quality/EXPERIMENT/RUN-sS`) or
`--experiment`. Alternatives (docs/method.md §2 says why the shipped one is EM):
- calibrated EM: `estimated_class_prior`, EM calibrated on the labeled pass, on every detection
  (`method.act.estimator.min_score=0`, the default until 2026-12-03);
- plain EM: the same without calibration (Saerens et al., 2002);
- calibrated EM >= 0.3: the same on the detections scoring at least 0.3 in both passes
  (`method.act.estimator.min_score=0.3`, the default since 2026-12-03);
- class-agnostic NMS: calibrated EM on one detection per location (IoU 0.5 across
  classes, best score kept), so an object no longer counts once in every class it resembles;
- adjusted count: labels of detections >= 0.5 counted, each class scaled by its labeled
  true-to-predicted ratio (adjusted classify-and-count);
- BBSE: detections >= 0.5, confusion P(predicted | true) from the labeled detections matched to a
  box (IoU >= 0.5), inverted by least squares (Lipton et al., 2018).
Two more columns are diagnostics, not estimators a run could use (`HELD_OUT`): calibrated EM >=
0.3 and BBSE fitted on a pass over the val images (to their own box counts), which the teacher
did not train on, instead of the labeled images, which it did. They ask whether calibration on
held-out labeled images would help; in training the val split is the evaluation set and stays
out of the estimate.
A second table gives each class's score mass per true object: the score sum of the detections
(calibrated EM's samples) matched to one of its boxes over its box count, which EM reads as its
share, on the unlabeled, the labeled and the val pass; a third, the boxes per image of the
shipped estimate (calibrated EM >= 0.3) calibrated on the labeled and on the val pass, beside the
unlabeled images' true count; a fourth, two statistics of "no class shift" (`shift_statistics`:
the likelihood ratio of Saerens et al., 2002, and Pearson's X² of the labeled boxes' counts
against the shipped estimate) with their chi-squared p-values, which a rule "estimate only when
the test says the priors differ" would read. `--focus CLASS ...` adds a fifth: each named class's
share (truth, labeled prior, shipped estimate calibrated on the labeled or the val pass) and its
calibrated mass per true box from its own boxes and from everything else (`class_mass`), on the
unlabeled, labeled and val passes. `--calibration-data OVERRIDE ...` adds one more calibration
pass, "held-out labeled": the labeled images of a second dataset of the run's experiment, for
the embedded data another generator seed, so images drawn like the labeled ones that the teacher
never trained on (the val images of the digits are not that: their handwriting is held out of
every other split). Like the val columns, a diagnostic no run can use:

    python benchmarks/prior_estimators.py outputs/bench-quality/digits/labelmatch-s3 --focus 8 \
        --calibration-data data.splits.seed=1 data.splits.num_labeled=300

`--shift-test` prints another table instead: the shift test of `method.act.estimator.
shift_test_level=0.05` (`label_shift_test`, 200 resamples, generator seed 0) on the pass a
refresh at `--step` (default 500) would make, min(1000, unlabeled) reference images drawn as
there and every labeled image as calibration, with the untested estimate's TV from the truth and
from the labeled prior and the three classes of largest |z|. Hydra overrides of the run's data
(`data.splits.seed=2`) may follow the run folders.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from benchmark_report import fitted_datamodule, repo_config
from torch import Tensor
from torchvision.ops import box_iou, nms

from labelmatch.callbacks.act_refresh import REFRESH_SCORE_FLOOR, keeping_class_scores
from labelmatch.checkpoints import load_module, pick_detector
from labelmatch.data.class_prior import ClassPrior, class_prior_from_counts
from labelmatch.method.act import (
    TeacherDetections,
    calibration_biases,
    em_label_shift,
    estimated_class_prior,
    label_shift_test,
    unlabeled_class_prior,
)
from labelmatch.method.teacher import score_floor


@dataclass
class Pass:
    """One refresh-like pass, per image: boxes float[N, 4], labels int64[N], scores float[N],
    rows float[N, C + 1] (softmax, background first), matched int64[N] (the class of the box a
    detection overlaps with IoU >= 0.5, 0 if none), and the true box count per class float[C]."""

    boxes: list[Tensor]
    labels: list[Tensor]
    scores: list[Tensor]
    rows: list[Tensor]
    matched: list[Tensor]
    true_counts: Tensor

    def detections(self, agnostic_iou: float | None = None) -> TeacherDetections:
        """All images' detections; with `agnostic_iou`, one per location (a score floor is
        `TeacherDetections.scoring_at_least`, as in training)."""
        kept = []
        for boxes, scores in zip(self.boxes, self.scores):
            keep = torch.arange(len(scores))
            if agnostic_iou is not None and keep.numel():
                keep = nms(boxes, scores, agnostic_iou)
            kept.append(keep)
        pick = lambda tensors: torch.cat([t[k] for t, k in zip(tensors, kept)])  # noqa: E731
        image_index = torch.repeat_interleave(
            torch.arange(len(kept)), torch.tensor([len(k) for k in kept], dtype=torch.long)
        )
        return TeacherDetections(
            pick(self.labels), pick(self.scores), pick(self.rows), len(self.boxes), image_index
        )

    def matched_labels(self, floor: float) -> tuple[Tensor, Tensor]:
        """(predicted labels, matched true labels) of the detections scoring >= floor."""
        keep = [s >= floor for s in self.scores]
        return (
            torch.cat([t[k] for t, k in zip(self.labels, keep)]),
            torch.cat([t[k] for t, k in zip(self.matched, keep)]),
        )


def teacher_pass(module, loader) -> Pass:
    """The teacher on every image of a loader in the val batch format, test transform
    (`teacher_detections`, keeping boxes and the true boxes' classes)."""
    num_classes = len(module.reliable_thresholds)
    roi_heads, rows = module.teacher.roi_heads, []
    roi_heads.postprocess_detections = keeping_class_scores(roi_heads.postprocess_detections, rows)
    result = Pass([], [], [], [], [], torch.zeros(num_classes, dtype=torch.float64))
    try:
        with torch.inference_mode(), score_floor(roi_heads, REFRESH_SCORE_FLOOR):
            for batch in loader:
                for output, target in zip(module.teacher(batch["images"]), batch["targets"]):
                    matched = torch.zeros_like(output["labels"])
                    if len(target["boxes"]) and len(output["boxes"]):
                        best, index = box_iou(output["boxes"], target["boxes"]).max(dim=1)
                        matched = torch.where(best >= 0.5, target["labels"][index], 0)
                    result.boxes.append(output["boxes"])
                    result.labels.append(output["labels"])
                    result.scores.append(output["scores"])
                    result.matched.append(matched)
                    counts = torch.bincount(target["labels"] - 1, minlength=num_classes)
                    result.true_counts += counts.double()
    finally:
        del roi_heads.postprocess_detections
    result.rows = [r.double() for r in rows]
    return result


def calibrated_estimate(
    unlabeled: Pass, labeled: Pass, prior: ClassPrior, min_score: float = 0.0, **kept
) -> ClassPrior:
    """The shipped estimate (`estimated_class_prior`, calibrated on `labeled`) on the detections
    `Pass.detections(**kept)`, at its `min_score` (`method.act.estimator.min_score`)."""
    estimate, _ = estimated_class_prior(
        unlabeled.detections(**kept), prior, labeled.detections(**kept), min_score=min_score
    )
    return estimate


def calibrated_em(
    unlabeled: Pass, labeled: Pass, prior: ClassPrior, min_score: float = 0.0, **kept
) -> Tensor:
    """Calibrated EM's shares float64[C] (`calibrated_estimate`)."""
    return calibrated_estimate(unlabeled, labeled, prior, min_score, **kept).class_ratios.double()


def adjusted_count(unlabeled: Pass, labeled: Pass, prior: ClassPrior, floor: float = 0.5) -> Tensor:
    """Predicted-label counts >= floor, class c scaled by (labeled true share of c) / (labeled
    predicted share of c); shares float64[C]. No detection >= floor in a pass: the labeled prior."""
    num_classes = prior.num_classes
    count = lambda labels: torch.bincount(labels - 1, minlength=num_classes).double()  # noqa: E731
    predicted_u = count(unlabeled.matched_labels(floor)[0])
    predicted_l = count(labeled.matched_labels(floor)[0])
    if predicted_u.sum() == 0 or predicted_l.sum() == 0:  # nothing to count: the labeled prior
        return prior.class_ratios.double()
    ratio = prior.class_ratios.double() * predicted_l.sum() / predicted_l.clamp(min=1)
    scaled = predicted_u * ratio
    return scaled / scaled.sum()


def bbse(unlabeled: Pass, labeled: Pass, prior: ClassPrior, floor: float = 0.5) -> Tensor:
    """Black-box shift estimation on detections >= floor: q = M w with q the unlabeled predicted
    shares, M[i, j] = P(predicted i | true j) on the labeled detections matched to a box; the
    shares are w solved by least squares, clipped at 0, normalised; float64[C]. No matched
    labeled detection or no unlabeled one >= floor: the labeled prior."""
    num_classes = prior.num_classes
    predicted, true = labeled.matched_labels(floor)
    on_box = true > 0
    unlabeled_predicted = unlabeled.matched_labels(floor)[0]
    if not on_box.any() or unlabeled_predicted.numel() == 0:  # nothing to solve: labeled prior
        return prior.class_ratios.double()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    ones = torch.ones(int(on_box.sum()), dtype=torch.float64)
    confusion.index_put_((predicted[on_box] - 1, true[on_box] - 1), ones, accumulate=True)
    confusion /= confusion.sum(dim=0, keepdim=True).clamp(min=1)
    shares = torch.bincount(unlabeled_predicted - 1, minlength=num_classes).double()
    solved = torch.linalg.lstsq(confusion, (shares / shares.sum())[:, None]).solution
    solved = solved.flatten().clamp(min=0)
    return solved / solved.sum().clamp(min=1e-12)


def plain_em(unlabeled: Pass, labeled: Pass, prior: ClassPrior) -> Tensor:
    """EM without the labeled-pass calibration (Saerens et al., 2002); shares float64[C]."""
    return estimated_class_prior(unlabeled.detections(), prior)[0].class_ratios.double()


# Each estimator: (unlabeled pass, labeled pass, labeled prior) -> shares float64[C].
ESTIMATORS: dict[str, Callable[[Pass, Pass, ClassPrior], Tensor]] = {
    "calibrated EM": calibrated_em,
    "plain EM": plain_em,
    "calibrated EM >= 0.3": functools.partial(calibrated_em, min_score=0.3),
    "class-agnostic NMS": functools.partial(calibrated_em, agnostic_iou=0.5),
    "adjusted count": adjusted_count,
    "BBSE": bbse,
}
# Diagnostics (module docstring): fitted on the val pass, with the val images' own prior.
HELD_OUT: dict[str, Callable[[Pass, Pass, ClassPrior], Tensor]] = {
    "calibrated EM >= 0.3 on val": functools.partial(calibrated_em, min_score=0.3),
    "BBSE on val": bbse,
}


def boxes_per_image(unlabeled: Pass, calibration: Pass, prior: ClassPrior) -> float:
    """The shipped estimate's boxes per image (`calibrated_estimate`, min_score 0.3):
    B_l · S_u / S_l, with B_l the calibration images' known count."""
    return calibrated_estimate(unlabeled, calibration, prior, min_score=0.3).boxes_per_image


def mass_per_object(samples: Pass) -> Tensor:
    """Per class, the score sum of the detections matched to one of its boxes over its box
    count, float64[C] (NaN for a class without boxes)."""
    matched, scores = torch.cat(samples.matched), torch.cat(samples.scores).double()
    mass = torch.zeros(len(samples.true_counts), dtype=torch.float64)
    mass.index_add_(0, (matched[matched > 0] - 1), scores[matched > 0])
    return mass / samples.true_counts.where(samples.true_counts > 0, torch.nan)


SHIPPED_FLOOR = 0.3  # method.act.estimator.min_score's default


def calibrated_posteriors(
    samples: Pass, labeled: Pass, prior: ClassPrior, floor: float = SHIPPED_FLOOR
) -> tuple[Tensor, Tensor, Tensor]:
    """(posteriors float64[N, C], weights float64[N], matched int64[N]) of `samples`' detections
    scoring >= floor: their foreground rows re-biased by the shipped calibration
    (`calibration_biases` fitted on `labeled`'s detections >= floor to `prior`, as
    `estimated_class_prior` does) and renormalised, their scores, their matched true classes."""
    num_classes = prior.num_classes
    fitted = labeled.detections().scoring_at_least(floor).weighted_posteriors(num_classes)
    biases = calibration_biases(*fitted, prior.class_ratios)
    posteriors, weights = (
        samples.detections().scoring_at_least(floor).weighted_posteriors(num_classes)
    )
    rebiased = posteriors * biases
    rebiased = rebiased / rebiased.sum(dim=1, keepdim=True).clamp(min=1e-300)
    return rebiased, weights, samples.matched_labels(floor)[1]


def class_mass(
    samples: Pass, labeled: Pass, prior: ClassPrior, index: int, floor: float = SHIPPED_FLOOR
) -> tuple[float, float]:
    """(own, inflow) per true box of class index + 1 in `samples`: the score-weighted calibrated
    posterior mass of that class (`calibrated_posteriors`, before EM) from the detections matched
    to one of its boxes (own) and from every other detection (inflow: boxes of other classes and
    background). EM reads a class's share from own + inflow; where the inflow is as large as the
    own mass, the share hinges on how well the calibration predicts the inflow. NaN, NaN when
    `samples` hold no box of the class."""
    boxes = samples.true_counts[index].item()
    if boxes == 0:
        return math.nan, math.nan
    posteriors, weights, matched = calibrated_posteriors(samples, labeled, prior, floor)
    mass, own = weights * posteriors[:, index], matched == index + 1
    return mass[own].sum().item() / boxes, mass[~own].sum().item() / boxes


def shift_statistics(
    unlabeled: Pass, labeled: Pass, prior: ClassPrior, floor: float = SHIPPED_FLOOR
) -> tuple[float, float]:
    """Two statistics of "no class shift", each chi-squared with C - 1 degrees of freedom when
    there is none and the posteriors are calibrated:
    - the likelihood ratio of Saerens et al. (2002): 2 Σ_i w_i log Σ_c q_i(c) π(c) / p_l(c), with
      q the calibrated posteriors of the unlabeled detections >= floor (`calibrated_posteriors`),
      w their scores and π their EM shares;
    - Pearson's X² of the labeled boxes' class counts n against the shipped estimate's shares π̂
      (`calibrated_estimate`): Σ_c (n_c − N π̂_c)² / (N π̂_c), N = Σ_c n_c.
    Returns (likelihood ratio, X²)."""
    posteriors, weights, _ = calibrated_posteriors(unlabeled, labeled, prior, floor)
    source = prior.class_ratios.double()
    shares, _ = em_label_shift(posteriors, weights, source)
    ratio = 2 * (weights * (posteriors * (shares / source)).sum(dim=1).log()).sum().item()
    estimate = calibrated_estimate(unlabeled, labeled, prior, floor).class_ratios.double()
    counts = labeled.true_counts
    expected = counts.sum() * estimate
    return ratio, ((counts - expected) ** 2 / expected).sum().item()


def chi2_survival(statistic: float, degrees: int) -> float:
    """P(X >= statistic) for X chi-squared with `degrees` degrees of freedom."""
    return torch.special.gammaincc(
        torch.tensor(degrees / 2, dtype=torch.float64),
        torch.tensor(statistic / 2, dtype=torch.float64),
    ).item()


def held_out_calibration(
    module, overrides: Sequence[str], calibration_data: Sequence[str]
) -> tuple[str, Pass, ClassPrior]:
    """("held-out labeled", the teacher's pass over the labeled images of the dataset that
    `calibration_data` makes of the run's config, their prior): images drawn like the labeled
    ones that the teacher never trained on (for the embedded data: canvases of another
    generator seed, their glyphs drawn from the same pool as the labeled and unlabeled ones)."""
    datamodule = fitted_datamodule(repo_config([*overrides, *calibration_data]).data)
    loader = datamodule.reference_dataloader(len(datamodule.labeled_dataset), 0, labeled=True)
    return "held-out labeled", teacher_pass(module, loader), datamodule.labeled_class_prior


def total_variation(a: Tensor, b: Tensor) -> float:
    return 0.5 * (a - b).abs().sum().item()


def compare(
    runs: Sequence[Path],
    experiment: str | None = None,
    focus: Sequence[str] = (),
    calibration_data: Sequence[str] = (),
) -> str:
    """The tables, markdown, one row per run: TV from the truth per estimator, then the held-out
    diagnostics (and the mean over runs); the score mass per true object, by class, on the
    unlabeled, labeled and val passes; the boxes per image; the two "no shift" statistics
    (`shift_statistics`); with `focus` (class names), each named class's share by the truth,
    the labeled prior and the shipped estimate calibrated on each calibration pass (labeled,
    val), and its own and inflow mass per true box (`class_mass`) on the unlabeled pass and each
    calibration pass.

    `calibration_data`: Hydra overrides of a second dataset of the run's experiment (for the
    embedded data, another generator seed: `data.splits.seed=1`) whose labeled images are one
    more calibration pass, "held-out labeled": drawn like the labeled images, never trained on.
    It adds the shipped estimate calibrated there to the TV and focus tables."""
    names, held_out = list(ESTIMATORS), list(HELD_OUT)
    extra = ["calibrated EM >= 0.3 on held-out labeled"] if calibration_data else []
    tv_lines = [
        "| run | TV labeled | " + " | ".join(f"TV {n}" for n in names + held_out + extra) + " |",
        "|---" * (len(names) + len(held_out) + len(extra) + 2) + "|",
    ]
    mass_lines, box_lines, test_lines, focus_lines = [], [], [], []
    totals = torch.zeros(len(names) + len(held_out) + len(extra) + 1, dtype=torch.float64)
    for run in runs:
        module, _ = load_module(run / "checkpoints/last.ckpt")
        module.teacher = pick_detector(module, "teacher")
        overrides = [f"experiment={experiment or run.parent.name}", "data.num_workers=0"]
        datamodule = fitted_datamodule(repo_config(overrides).data)
        every_unlabeled = len(datamodule.unlabeled_dataset)
        every_labeled = len(datamodule.labeled_dataset)
        unlabeled = teacher_pass(module, datamodule.reference_dataloader(every_unlabeled, 0))
        labeled = teacher_pass(
            module, datamodule.reference_dataloader(every_labeled, 0, labeled=True)
        )
        val = teacher_pass(module, datamodule.val_dataloader())
        prior = datamodule.labeled_class_prior
        val_prior = class_prior_from_counts(val.true_counts, len(val.boxes))
        # (name, pass, its known prior): the passes a calibration can be fitted on.
        calibrations = [("labeled", labeled, prior), ("val", val, val_prior)]
        if calibration_data:
            calibrations.append(held_out_calibration(module, overrides, calibration_data))
        truth = unlabeled_class_prior(datamodule).class_ratios.double()
        tv = [total_variation(prior.class_ratios.double(), truth)]
        tv += [total_variation(ESTIMATORS[n](unlabeled, labeled, prior), truth) for n in names]
        tv += [total_variation(HELD_OUT[n](unlabeled, val, val_prior), truth) for n in held_out]
        if calibration_data:
            on_held_out = calibrated_em(unlabeled, *calibrations[-1][1:], SHIPPED_FLOOR)
            tv.append(total_variation(on_held_out, truth))
        totals += torch.tensor(tv, dtype=torch.float64)
        label = f"{run.parent.name}/{run.name}"
        tv_lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in tv) + " |")
        truth_boxes = unlabeled.true_counts.sum().item() / len(unlabeled.boxes)
        boxes = [
            boxes_per_image(unlabeled, labeled, prior),
            boxes_per_image(unlabeled, val, val_prior),
        ]
        box_lines.append(f"| {label} | {truth_boxes:.2f} | {boxes[0]:.2f} | {boxes[1]:.2f} |")
        for split, samples in (("unlabeled", unlabeled), ("labeled", labeled), ("val", val)):
            mass = " ".join(f"{m:.2f}" for m in mass_per_object(samples).tolist())
            mass_lines.append(f"| {label} | {split} | {mass} |")
        ratio, pearson = shift_statistics(unlabeled, labeled, prior)
        degrees = prior.num_classes - 1
        test_lines.append(
            f"| {label} | {degrees} | {ratio:.1f} | {chi2_survival(ratio, degrees):.2g} "
            f"| {pearson:.1f} | {chi2_survival(pearson, degrees):.2g} |"
        )
        estimates = [calibrated_em(unlabeled, *c[1:], SHIPPED_FLOOR) for c in calibrations]
        for name in focus:
            index = datamodule.class_names.index(name)
            shares = [truth[index], prior.class_ratios[index], *(e[index] for e in estimates)]
            samples = [unlabeled, *(c[1] for c in calibrations)]
            masses = [class_mass(s, labeled, prior, index) for s in samples]
            focus_lines.append(
                f"| {label} | `{name}` | "
                + " | ".join(f"{float(v):.3f}" for v in shares)
                + " | "
                + " | ".join(f"{own:.2f} / {inflow:.2f}" for own, inflow in masses)
                + " |"
            )
    means = (totals / len(runs)).tolist()
    tv_lines.append(f"| mean of {len(runs)} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    mass_table = [
        "| run | pass | score mass per true object, classes 1..C |",
        "|---|---|---|",
        *mass_lines,
    ]
    box_table = [
        "| run | true boxes per image | calibrated EM >= 0.3 | calibrated EM >= 0.3 on val |",
        "|---|---|---|---|",
        *box_lines,
    ]
    test_table = [
        "| run | degrees of freedom | likelihood ratio (Saerens et al.) | p "
        "| Pearson X², labeled counts vs calibrated EM >= 0.3 | p |",
        "|---|---|---|---|---|---|",
        *test_lines,
    ]
    tables = [tv_lines, mass_table, box_table, test_table]
    if focus:
        passes = ["labeled", "val", *(["held-out labeled"] if calibration_data else [])]
        tables.append(
            [
                "| run | class | true share | labeled prior | "
                + " | ".join(f"calibrated EM >= 0.3 on {p}" for p in passes)
                + " | own / inflow per true box: unlabeled pass | "
                + " | ".join(f"{p} pass" for p in passes)
                + " |",
                "|---" * (5 + 2 * len(passes)) + "|",
                *focus_lines,
            ]
        )
    return "\n\n".join("\n".join(table) for table in tables)


def shift_tests(
    runs: Sequence[Path],
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    step: int = 500,
    level: float = 0.05,
) -> str:
    """The shift test's table (`--shift-test`, the module docstring), one row per run."""
    lines = [
        "| run | max abs z | bound | shift detected | TV estimate, truth | TV labeled, truth "
        "| TV estimate, labeled | largest abs z: class z (estimate vs labeled share, truth) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        module, _ = load_module(run / "checkpoints/last.ckpt")
        module.teacher = pick_detector(module, "teacher")
        config = [f"experiment={experiment or run.parent.name}", "data.num_workers=0", *overrides]
        datamodule = fitted_datamodule(repo_config(config).data)
        reference = min(1000, len(datamodule.unlabeled_dataset))
        unlabeled = teacher_pass(module, datamodule.reference_dataloader(reference, step))
        every_labeled = len(datamodule.labeled_dataset)
        labeled = teacher_pass(
            module, datamodule.reference_dataloader(every_labeled, step, labeled=True)
        )
        prior = datamodule.labeled_class_prior
        truth = unlabeled_class_prior(datamodule).class_ratios
        passes = (unlabeled.detections(), prior, labeled.detections())
        estimate, _ = estimated_class_prior(*passes, min_score=SHIPPED_FLOOR)
        generator = torch.Generator().manual_seed(0)
        test = label_shift_test(
            passes[0], prior, generator, passes[2], level=level, min_score=SHIPPED_FLOOR
        )
        names, shares = datamodule.class_names, estimate.class_ratios
        largest = test.z.abs().argsort(descending=True)[:3].tolist()
        classes = ", ".join(
            f"`{names[i]}` {test.z[i]:.2f} ({shares[i]:.3f} vs {prior.class_ratios[i]:.3f}, "
            f"{truth[i]:.3f})"
            for i in largest
        )
        tvs = (
            total_variation(shares, truth),
            total_variation(prior.class_ratios, truth),
            total_variation(shares, prior.class_ratios),
        )
        lines.append(
            f"| {run.parent.name}/{run.name} | {test.statistic:.2f} | {test.critical:.2f} | "
            f"{'yes' if test.detected else 'no'} | "
            + " | ".join(f"{tv:.3f}" for tv in tvs)
            + f" | {classes} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders with checkpoints/last.ckpt")
    parser.add_argument("--experiment", help="the runs' experiment (default: each folder's parent)")
    parser.add_argument(
        "--focus", nargs="+", default=[], metavar="CLASS", help="class names for the focus table"
    )
    parser.add_argument(
        "--calibration-data",
        nargs="+",
        default=[],
        metavar="OVERRIDE",
        help="Hydra overrides of a second dataset whose labeled images calibrate (held-out)",
    )
    parser.add_argument(
        "--shift-test", action="store_true", help="the shift test's table instead (docstring)"
    )
    parser.add_argument("--step", type=int, default=500, help="the refresh step (--shift-test)")
    args = parser.parse_args(argv)
    # Hydra overrides of the runs' data: key=value that is not a folder (multirun's are seed=0)
    overrides = [r for r in args.runs if "=" in r and not Path(r).is_dir()]
    runs = [Path(r) for r in args.runs if r not in overrides]
    if args.shift_test:
        print(shift_tests(runs, args.experiment, overrides, args.step))
        return
    if overrides:
        parser.error(f"data overrides {overrides} go with --shift-test only")
    print(compare(runs, args.experiment, args.focus, args.calibration_data))


if __name__ == "__main__":
    main(sys.argv[1:])
