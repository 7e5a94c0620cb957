"""Issue #17's measurements: which class prior should ACT aim at when the unlabeled images
follow another class distribution than the labeled ones?

A self-contained list of runs, `ENTRIES` (name, overrides) x `EXPERIMENTS`, meant to be
plugged into the comparison harness (benchmarks/quality.py) as it grows; until then
`python benchmarks/prior_shift.py commands` prints one training command per run, and
`python benchmarks/prior_shift.py summary RUNS_DIR` reads the finished runs into a table and
checks the targets (docs/benchmarks.md, "Estimated prior under class shift"). Nothing here
trains by itself: the runs take about a quarter of an hour each on a 2-core CPU.

`python benchmarks/prior_shift.py estimate CKPT --experiments digits digits_shift` is the cheap
check in between: one trained teacher (a digits run's checkpoint; the shifted digits share its
labeled images) predicts on each experiment's unlabeled images as an ACT refresh does, and the
estimated prior is compared with the labeled and the true one (minutes, no training).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from labelmatch.callbacks.act_refresh import detections_on
from labelmatch.checkpoints import load_module, pick_detector
from labelmatch.method.act import (
    ClassPrior,
    estimated_class_prior,
    unlabeled_class_prior,
)
from labelmatch.plots import read_run_metrics

REPO = Path(__file__).resolve().parents[1]

# (name, overrides): one pseudo-labelling rule each, on any experiment.
ENTRIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fixed_threshold", ("method=mean_teacher",)),  # one fixed score threshold, 0.7
    ("act_labeled_prior", ("method=labelmatch",)),  # the paper: the labeled boxes' prior
    ("act_estimated_prior", ("method=labelmatch", "method.act.prior=estimated")),
    ("act_oracle_prior", ("method=labelmatch", "method.act.prior=oracle")),  # reference only
)
# Shifted splits (the targets' "shifted") and their unshifted counterparts.
SHIFTED = ("digits_shift", "digits_shift_uniform", "glyphs_shift")
UNSHIFTED = ("digits", "glyphs_10pct")
EXPERIMENTS = SHIFTED + UNSHIFTED
SEEDS = (0, 1, 2)
# Targets: on shifted splits the estimated prior closes at least this share of the teacher mAP
# gap between the labeled and the oracle prior; on unshifted ones it costs at most this many
# mAP points against the labeled prior.
GAP_CLOSED = 0.5
UNSHIFTED_COST = 0.5


def run_dir(runs: Path, experiment: str, name: str, seed: int) -> Path:
    return runs / experiment / f"{name}-s{seed}"


def commands(runs: Path, experiments: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """One `python -m labelmatch.run` line per experiment x entry x seed."""
    return [
        " ".join(
            [
                "python -m labelmatch.run",
                f"experiment={experiment}",
                *overrides,
                f"seed={seed}",
                f"hydra.run.dir={run_dir(runs, experiment, name, seed)}",
            ]
        )
        for experiment in experiments
        for name, overrides in ENTRIES
        for seed in seeds
    ]


def last_window_mean(metrics: dict, name: str, window: int) -> float:
    """Mean of a logged `pseudo/*` value over its last `window` steps (NaN if never logged)."""
    if name not in metrics:
        return math.nan
    steps, values = metrics[name]
    kept = [v for s, v in zip(steps, values) if s > steps[-1] - window]
    return sum(kept) / len(kept)


def measure(directory: Path, window: int) -> dict[str, float]:
    """Teacher mAP (x100) from results.json; pseudo boxes per image and KL(pseudo ‖ unlabeled
    ground truth) over the last `window` training steps from metrics.csv."""
    results = json.loads((directory / "results.json").read_text())
    metrics = read_run_metrics(directory)
    return {
        "teacher_map": 100 * results["teacher"]["map"],
        "kl_to_gt": last_window_mean(metrics, "pseudo/kl_to_gt", window),
        "boxes_per_image": last_window_mean(metrics, "pseudo/boxes_per_image", window),
        "gt_per_image": last_window_mean(metrics, "pseudo/gt_per_image", window),
    }


def check_targets(shifted: bool, maps: dict[str, float]) -> tuple[bool, str]:
    """Whether the estimated prior meets its target, given the mean teacher mAP per entry."""
    labeled, estimated = maps["act_labeled_prior"], maps["act_estimated_prior"]
    if not shifted:
        cost = labeled - estimated
        return cost <= UNSHIFTED_COST, f"costs {cost:+.2f} mAP (limit {UNSHIFTED_COST})"
    gap = maps["act_oracle_prior"] - labeled
    if gap <= 0:  # nothing to close: the labeled prior already does as well as the oracle
        return estimated >= labeled - UNSHIFTED_COST, f"no gap (oracle - labeled {gap:+.2f})"
    closed = (estimated - labeled) / gap
    return closed >= GAP_CLOSED, f"closes {100 * closed:.0f} % of a {gap:.2f} mAP gap"


def summary(runs: Path, seeds: Sequence[int], window: int) -> str:
    """A markdown table of every finished run (means over seeds) and the targets' verdicts."""
    lines = [
        "| experiment | entry | seeds | teacher mAP | KL(pseudo ‖ GT) | pseudo boxes / img "
        "| GT boxes / img |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for experiment in EXPERIMENTS:
        maps = {}
        for name, _ in ENTRIES:
            found = [run_dir(runs, experiment, name, s) for s in seeds]
            found = [d for d in found if (d / "results.json").is_file()]
            if not found:
                continue
            rows = [measure(d, window) for d in found]
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            maps[name] = mean["teacher_map"]
            lines.append(
                f"| {experiment} | {name} | {len(found)} | {mean['teacher_map']:.1f} | "
                f"{mean['kl_to_gt']:.3f} | {mean['boxes_per_image']:.2f} | "
                f"{mean['gt_per_image']:.2f} |"
            )
        needed = {"act_labeled_prior", "act_estimated_prior"}
        needed |= {"act_oracle_prior"} if experiment in SHIFTED else set()
        if needed <= set(maps):
            met, how = check_targets(experiment in SHIFTED, maps)
            verdicts.append(f"- {experiment}: {'PASS' if met else 'SHORT'}, the estimate {how}")
    return "\n".join(lines + [""] + verdicts)


def total_variation(p: ClassPrior, q: ClassPrior) -> float:
    return 0.5 * (p.class_ratios - q.class_ratios).abs().sum().item()


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
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}", "data.num_workers=0"])
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        passes = {}
        for labeled in (False, True):
            pool = datamodule.labeled_dataset if labeled else datamodule.unlabeled_dataset
            count = min(num_images, len(pool))
            loader = datamodule.reference_dataloader(count, seed=0, labeled=labeled)
            with torch.no_grad():
                passes[labeled] = detections_on(None, module, loader, count)
        prior, truth = datamodule.labeled_class_prior, unlabeled_class_prior(datamodule)
        plain, _ = estimated_class_prior(passes[False], prior)
        calibrated, _ = estimated_class_prior(passes[False], prior, passes[True])
        tv = [total_variation(p, truth) for p in (prior, plain, calibrated)]
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
    parser.add_argument("action", choices=("commands", "summary", "estimate"))
    parser.add_argument(
        "runs",
        type=Path,
        nargs="?",
        default=Path("outputs/prior-shift"),
        help="the runs' folder (commands, summary) or a checkpoint (estimate)",
    )
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--window", type=int, default=250, help="last steps of pseudo/* means")
    parser.add_argument("--images", type=int, default=1000, help="estimate: reference images")
    args = parser.parse_args(argv)
    if args.action == "commands":
        print("\n".join(commands(args.runs, args.experiments, args.seeds)))
    elif args.action == "summary":
        print(summary(args.runs, args.seeds, args.window))
    else:
        print(estimate(args.runs, args.experiments, args.images))


if __name__ == "__main__":
    main(sys.argv[1:])
