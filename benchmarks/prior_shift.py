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
import datetime
import json
import math
import shlex
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
sys.path.insert(0, str(REPO / "benchmarks"))
from benchmark_report import machine_description, replace_section  # noqa: E402

SECTION_MARKERS = ("<!-- prior-shift:begin -->", "<!-- prior-shift:end -->")

# (name, overrides): one pseudo-labelling rule each, on any experiment.
ENTRIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # One fixed score threshold, 0.7 (mean_teacher's default, written out as benchmarks/quality.py
    # writes its mean_teacher_0.7 run, so that one digits run serves both tables).
    (
        "fixed_threshold",
        (
            "method=mean_teacher",
            "method.fixed_thresholds.reliable=0.7",
            "method.fixed_thresholds.uncertain=0.7",
        ),
    ),
    ("act_labeled_prior", ("method=labelmatch",)),  # the paper: the labeled boxes' prior
    ("act_estimated_prior", ("method=labelmatch", "method.act.prior=estimated")),
    ("act_oracle_prior", ("method=labelmatch", "method.act.prior=oracle")),  # reference only
)
# Shifted splits (the targets' "shifted") and their unshifted counterparts.
SHIFTED = ("digits_shift", "digits_shift_uniform", "glyphs_shift")
UNSHIFTED = ("digits", "glyphs_10pct")
EXPERIMENTS = SHIFTED + UNSHIFTED
SEEDS = (0, 1, 2)
TARGET_SEEDS = 3  # the targets are judged on means over this many seeds
# Targets: on shifted splits the estimated prior closes at least this share of the teacher mAP
# gap between the labeled and the oracle prior; on unshifted ones it costs at most this many
# mAP points against the labeled prior.
GAP_CLOSED = 0.5
UNSHIFTED_COST = 0.5


def run_dir(runs: Path, experiment: str, name: str, seed: int) -> Path:
    return runs / experiment / f"{name}-s{seed}"


# Two-stage experiments (docs/method.md §1): every entry starts from the supervised baseline of
# the same labeled fold and seed. glyphs_shift keeps glyphs_10pct's labeled fold, so both share
# glyphs_10pct_baseline (the same run as benchmarks/quality.py's glyphs_10pct `baseline-sS`).
BASELINES = {"glyphs_shift": "glyphs_10pct_baseline", "glyphs_10pct": "glyphs_10pct_baseline"}


def baseline_dir(runs: Path, experiment: str, seed: int) -> Path:
    return runs / "baselines" / f"{BASELINES[experiment]}-s{seed}"


def commands(runs: Path, experiments: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """One `python -m labelmatch.run` line per experiment x entry x seed, each two-stage
    experiment's baselines first (one per seed, shared by the experiments of that baseline)."""
    lines = []
    for experiment in experiments:
        for seed in seeds:
            if experiment not in BASELINES:
                continue
            baseline = " ".join(
                [
                    "python -m labelmatch.run",
                    f"experiment={BASELINES[experiment]}",
                    f"seed={seed}",
                    f"hydra.run.dir={baseline_dir(runs, experiment, seed)}",
                ]
            )
            if baseline not in lines:
                lines.append(baseline)
    for experiment in experiments:
        for name, overrides in ENTRIES:
            for seed in seeds:
                init_from = []
                if experiment in BASELINES:
                    checkpoint = baseline_dir(runs, experiment, seed) / "checkpoints/last.ckpt"
                    init_from = [f"method.init_from={checkpoint}"]
                lines.append(
                    " ".join(
                        [
                            "python -m labelmatch.run",
                            f"experiment={experiment}",
                            *overrides,
                            *init_from,
                            f"seed={seed}",
                            f"hydra.run.dir={run_dir(runs, experiment, name, seed)}",
                        ]
                    )
                )
    return lines


def last_window_mean(metrics: dict, name: str, window: int) -> float:
    """Mean of a logged `pseudo/*` value over its last `window` steps (NaN if never logged)."""
    if name not in metrics:
        return math.nan
    steps, values = metrics[name]
    kept = [v for s, v in zip(steps, values) if s > steps[-1] - window]
    return sum(kept) / len(kept)


def logged_prior(metrics: dict, kind: str) -> dict[str, float] | None:
    """The class shares of `act/<kind>/<class>` at the last refresh that logged them (None if
    never logged): kind "prior" is the one ACT aimed at, "unlabeled_prior" the ground truth
    (logged by runs whose prior is not the labeled one: estimated, oracle)."""
    prefix = f"act/{kind}/"
    latest = {
        key[len(prefix) :]: values[-1]
        for key, (_, values) in metrics.items()
        if key.startswith(prefix) and key != prefix + "boxes_per_image"
    }
    total = sum(latest.values())
    return {name: value / total for name, value in latest.items()} if total > 0 else None


def total_variation_shares(p: dict[str, float] | None, q: dict[str, float] | None) -> float:
    """TV distance of two class-share dicts over the same classes; NaN if either is missing."""
    if p is None or q is None or p.keys() != q.keys():
        return math.nan
    return 0.5 * sum(abs(p[name] - q[name]) for name in p)


def measure(directory: Path, window: int, truth: dict[str, float] | None = None) -> dict:
    """Teacher mAP (x100) from results.json; pseudo boxes per image and KL(pseudo ‖ unlabeled
    ground truth) over the last `window` training steps from metrics.csv; the TV distance from
    the class shares ACT aimed at at its last refresh to the unlabeled ground truth (`truth`,
    else the run's own `act/unlabeled_prior`), and the boxes per image it aimed at."""
    results = json.loads((directory / "results.json").read_text())
    metrics = read_run_metrics(directory)
    truth = truth or logged_prior(metrics, "unlabeled_prior")
    boxes = metrics.get("act/prior/boxes_per_image", ([], [math.nan]))[1][-1]
    return {
        "teacher_map": 100 * results["teacher"]["map"],
        "kl_to_gt": last_window_mean(metrics, "pseudo/kl_to_gt", window),
        "boxes_per_image": last_window_mean(metrics, "pseudo/boxes_per_image", window),
        "gt_per_image": last_window_mean(metrics, "pseudo/gt_per_image", window),
        "prior_tv": total_variation_shares(logged_prior(metrics, "prior"), truth),
        "prior_boxes": boxes,
    }


def ground_truth_shares(directories: Sequence[Path]) -> dict[str, float] | None:
    """The unlabeled ground truth's class shares, from the first of `directories` that logged
    them (runs with the labeled prior or a fixed threshold do not; estimated and oracle do)."""
    for directory in directories:
        if (directory / "metrics.csv").is_file():
            shares = logged_prior(read_run_metrics(directory), "unlabeled_prior")
            if shares is not None:
                return shares
    return None


def revision(directory: Path) -> str:
    """The code a run was trained with (RUN/revision.txt, as benchmarks/quality.py writes it)."""
    path = directory / "revision.txt"
    return path.read_text().strip() if path.is_file() else "unknown"


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


def cell(value: float, spec: str) -> str:
    """A table cell: `value` formatted, or – where it was not measured (NaN)."""
    return "–" if math.isnan(value) else format(value, spec)


def summary(runs: Path, seeds: Sequence[int], window: int) -> str:
    """A markdown table of every finished run (means over seeds) and the targets' verdicts.

    The targets are judged on means over TARGET_SEEDS seeds: on fewer, one that holds is NOT
    CHECKED (with the seeds it holds on), one that fails is MISSED, as benchmarks/quality.py
    judges issue #14's."""
    lines = [
        "| experiment | entry | seeds | teacher mAP | KL(pseudo ‖ GT) | pseudo boxes / img "
        "| GT boxes / img | TV(ACT's prior, GT) | ACT's boxes / img | code |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for experiment in EXPERIMENTS:
        maps, counts = {}, {}
        truth = {  # per seed: the seed may draw another unlabeled split
            seed: ground_truth_shares([run_dir(runs, experiment, n, seed) for n, _ in ENTRIES])
            for seed in seeds
        }
        for name, _ in ENTRIES:
            found = [(s, run_dir(runs, experiment, name, s)) for s in seeds]
            found = [(s, d) for s, d in found if (d / "results.json").is_file()]
            if not found:
                continue
            rows = [measure(d, window, truth[s]) for s, d in found]
            found = [d for _, d in found]
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            maps[name], counts[name] = mean["teacher_map"], len(found)
            code = ", ".join(sorted({revision(d) for d in found}))
            cells = [
                cell(mean[key], spec)
                for key, spec in [
                    ("teacher_map", ".1f"),
                    ("kl_to_gt", ".3f"),
                    ("boxes_per_image", ".2f"),
                    ("gt_per_image", ".2f"),
                    ("prior_tv", ".3f"),
                    ("prior_boxes", ".2f"),
                ]
            ]
            lines.append(f"| {experiment} | {name} | {len(found)} | {' | '.join(cells)} | {code} |")
        needed = {"act_labeled_prior", "act_estimated_prior"}
        needed |= {"act_oracle_prior"} if experiment in SHIFTED else set()
        if needed <= set(maps):
            met, how = check_targets(experiment in SHIFTED, maps)
            fewest = min(counts[name] for name in needed)
            if met and fewest < TARGET_SEEDS:
                verdict, how = "NOT CHECKED", f"{how}; holds on {fewest} of {TARGET_SEEDS} seeds"
            else:
                verdict = "PASS" if met else "MISSED"
            verdicts.append(f"- {experiment}: **{verdict}**, the estimate {how}")
    return "\n".join(lines + [""] + verdicts)


def report(runs: Path, seeds: Sequence[int], window: int, command: str) -> str:
    """The docs section of `summary`: command, machine, date, the table and the verdicts."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "### Measured: prior-shift runs (`benchmarks/prior_shift.py summary`)",
            "",
            f"Command: `{command}`",
            "",
            f"- Machine (the report's; the runs trained here too): {machine_description()}",
            f"- Date: {now}; seeds asked for: {' '.join(map(str, seeds))}",
            f"- Runs: `{runs}/EXPERIMENT/ENTRY-sS` (commands above); the `code` column is the "
            "revision each run was trained with (its `revision.txt`).",
            f"- KL(pseudo ‖ GT) and pseudo boxes / img: means over the last {window} training "
            "steps; TV(ACT's prior, GT): total variation between the class shares ACT aimed at "
            "at its last refresh and the unlabeled ground truth's (– without ACT); ACT's boxes "
            "/ img: the boxes per image it aimed at.",
            "",
            summary(runs, seeds, window),
        ]
    )


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
    parser.add_argument(
        "--out", type=Path, help="summary: also write it into this markdown file's section"
    )
    args = parser.parse_args(argv)
    if args.action == "commands":
        print("\n".join(commands(args.runs, args.experiments, args.seeds)))
    elif args.action == "summary":
        command = shlex.join(["python", "benchmarks/prior_shift.py", *argv])
        section = report(args.runs, args.seeds, args.window, command)
        print(section)
        if args.out:
            replace_section(args.out, *SECTION_MARKERS, section)
    else:
        print(estimate(args.runs, args.experiments, args.images))


if __name__ == "__main__":
    main(sys.argv[1:])
