"""Issue #17's cheap check of the estimated prior, before any long run: one trained teacher
predicts on each experiment's unlabeled images as an ACT refresh does, and the prior estimated
from its detections (plain EM, and calibrated on as many labeled images) is compared with the
labeled and the true one (minutes, no training):

    python benchmarks/prior_shift.py CKPT --experiments digits digits_shift digits_shift_uniform

(a digits checkpoint serves the three: the shifted digits share the default digits' labeled
images; for the glyphs, a glyphs_10pct one and `--experiments glyphs_10pct glyphs_shift`).
The training runs that measure what the estimate is worth are comparisons of the evidence
harness: `benchmarks/quality.py --comparison prior_shift` (on `*_shift` experiments) and
`--comparison prior_no_shift` (docs/benchmarks.md, "Estimated prior under class shift").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from benchmark_report import fitted_datamodule, repo_config

from labelmatch.callbacks.act_refresh import detections_on
from labelmatch.checkpoints import load_module, pick_detector
from labelmatch.method.act import estimated_class_prior, unlabeled_class_prior

EXPERIMENTS = ("digits", "digits_shift", "digits_shift_uniform")


def estimate(checkpoint: Path, experiments: Sequence[str], num_images: int) -> str:
    """The estimated prior of `checkpoint`'s teacher on each experiment's unlabeled images (a
    refresh pass on `num_images` of them), plain and calibrated on as many labeled images,
    against the labeled and the true prior: total variation (TV) of the class shares and boxes
    per image, as a markdown table."""
    module, _ = load_module(checkpoint)
    # A supervised (burn-in) checkpoint has no teacher yet: its student is the teacher-to-be.
    module.teacher = pick_detector(module, "teacher")
    lines = [
        "| experiment | images | TV labeled | TV estimate | TV calibrated | boxes/img labeled "
        "| estimate | calibrated | true |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for experiment in experiments:
        cfg = repo_config([f"experiment={experiment}", "data.num_workers=0"])
        datamodule = fitted_datamodule(cfg.data)
        passes = {}
        for labeled in (False, True):
            pool = datamodule.labeled_dataset if labeled else datamodule.unlabeled_dataset
            count = min(num_images, len(pool))
            loader = datamodule.reference_dataloader(count, step=0, labeled=labeled)
            with torch.no_grad():
                passes[labeled] = detections_on(None, module, loader, count)
        prior, truth = datamodule.labeled_class_prior, unlabeled_class_prior(datamodule)
        plain, _ = estimated_class_prior(passes[False], prior)
        calibrated, _ = estimated_class_prior(passes[False], prior, passes[True])
        tv = [p.total_variation(truth) for p in (prior, plain, calibrated)]
        boxes = [p.boxes_per_image for p in (prior, plain, calibrated, truth)]
        lines.append(
            f"| {experiment} | {passes[False].num_images} | "
            + " | ".join(f"{v:.3f}" for v in tv)
            + " | "
            + " | ".join(f"{b:.2f}" for b in boxes)
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a trained run's checkpoints/*.ckpt")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--images", type=int, default=1000, help="reference images per pass")
    args = parser.parse_args(argv)
    print(estimate(args.checkpoint, args.experiments, args.images))


if __name__ == "__main__":
    main(sys.argv[1:])
