"""Quality benchmark: supervised vs mean teacher vs LabelMatch at the same step budget and seeds.

    python benchmarks/quality.py [--experiment digits] [--seeds 0 1] [--methods M ...]
                                 [--out docs/benchmarks.md] [--runs-dir DIR] [--reuse]
                                 [hydra overrides]

Each (method, seed) trains with `python -m labelmatch.run experiment=E method=M seed=S
hydra.run.dir=RUNS/M-sS [overrides]` (the same recipe, hence the same steps, for every method;
E is `digits` or one of the COCO-standard analogues `digits_1pct`, `digits_5pct`, `digits_10pct`;
RUNS defaults to outputs/bench-quality/E), unless `--reuse` finds that run's results.json. Then
its final model labels the unlabeled split (test transform) with the run's final thresholds, and
the pseudo labels are scored against the split's ground truth (Fig. 4 of the paper: precision,
boxes per image, class-distribution KL).
The table replaces the `<!-- quality:begin -->` ... `<!-- quality:end -->` section of `--out`
(`quality-E` markers for an experiment E other than digits; created if missing), so other
benchmark sections can share the file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from benchmark_report import machine_description, replace_section
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from labelmatch.evaluation.pseudo_quality import pseudo_label_statistics
from labelmatch.method.act import labeled_class_prior
from labelmatch.method.module import detector_state

REPO = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "mean_teacher", "labelmatch", "labelmatch_online")
# Benchmark entries that are a method config plus overrides: name -> (method, overrides).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "labelmatch_online": ("labelmatch", ["method.act.mode=online"]),  # official online ACT
}
# The targets: LabelMatch's mAP must exceed each baseline's by at least this many points.
TARGETS = {"supervised": 10.0, "mean_teacher": 2.0}
# One section per experiment: `quality` for the default digits recipe, `quality-E` for others.


def section_markers(experiment: str) -> tuple[str, str]:
    name = "quality" if experiment == "digits" else f"quality-{experiment}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


# Lines of the training log echoed as progress: the project's own INFO/WARNING/ERROR records
# (Hydra's job logging format "[time][logger][LEVEL] - message"), except the per-file data
# reports (dicts of counts; they stay in train.log).
PROGRESS_LINE = re.compile(r"\]\[labelmatch[\w.]*\]\[(INFO|WARNING|ERROR)\] - (?!\{)(.*)")


def method_and_overrides(entry: str) -> tuple[str, list[str]]:
    """The `method=` config of a benchmark entry and the overrides that make it that entry."""
    return VARIANTS.get(entry, (entry, []))


def evaluated_model(method: str) -> str:
    """The model reported: the teacher of a mean-teacher run, the supervised student."""
    return "student" if method == "supervised" else "teacher"


@dataclass
class Run:
    """One trained (method, seed): its results.json and the pseudo-label statistics."""

    method: str
    seed: int
    run_dir: Path
    results: dict[str, Any]
    pseudo: dict[str, float]

    @property
    def evaluated(self) -> str:
        return evaluated_model(self.method)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.results[self.evaluated]


# ------------------------------------------------------------------------------------ training
def train(method: str, seed: int, run_dir: Path, overrides: Sequence[str], label: str) -> None:
    """`python -m labelmatch.run` in a subprocess, its output to RUN/train.log, progress echoed."""
    config_method, variant = method_and_overrides(method)
    command = [
        sys.executable,
        "-m",
        "labelmatch.run",
        f"method={config_method}",
        *variant,
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    run_dir.mkdir(parents=True)
    log_path = run_dir / "train.log"
    print(f"{label} training -> {run_dir} (log: {log_path.name})", flush=True)
    started = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        for line in process.stdout:
            log.write(line)
            progress = PROGRESS_LINE.search(line)
            if progress:
                print(f"    {progress.group(2)}", flush=True)
    if process.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        sys.exit(f"{tail}\n{label} training failed (exit {process.returncode}), see {log_path}")
    print(f"{label} trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)


def ensure_trained(
    method: str, seed: int, run_dir: Path, overrides: Sequence[str], reuse: bool, label: str
) -> dict[str, Any]:
    """results.json of the run, training it first unless `reuse` finds it already there."""
    results_path = run_dir / "results.json"
    if results_path.is_file() and reuse:
        print(f"{label} reusing {run_dir}", flush=True)
    elif results_path.is_file():
        sys.exit(f"{run_dir} already holds a finished run: pass --reuse, or delete it to retrain")
    elif run_dir.exists() and any(run_dir.iterdir()):
        sys.exit(f"{run_dir} holds an unfinished run (no results.json): delete it to retrain")
    else:
        train(method, seed, run_dir, overrides, label)
    results = json.loads(results_path.read_text())
    recorded = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    config_method, variant = method_and_overrides(method)
    expected = [f"method={config_method}", *variant, f"seed={seed}", *overrides]
    if not set(expected) <= set(recorded):
        sys.exit(f"{run_dir}: trained with {recorded}, not with {expected}")
    evaluated = evaluated_model(method)
    if evaluated not in results:
        sys.exit(f"{results_path}: no {evaluated} metrics (did the run end within burn-in?)")
    return results


# ------------------------------------------------------------------------------ pseudo labels
def supervised_reference_threshold() -> float:
    """The supervised model has no teacher; it is scored as a mean teacher would start labelling
    with it: at mean_teacher's fixed threshold (conf/method/mean_teacher.yaml, 0.7)."""
    config = OmegaConf.load(REPO / "conf" / "method" / "mean_teacher.yaml")
    return float(config.fixed_thresholds.reliable)


def run_pseudo_statistics(run_dir: Path, method: str) -> dict[str, float]:
    """Pseudo-label statistics of a finished run's final model on its unlabeled split."""
    cfg: DictConfig = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data, use_unlabeled=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    checkpoint = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    state = checkpoint["state_dict"]
    detector = instantiate(cfg.model, num_classes=datamodule.num_classes)
    detector.load_state_dict(
        detector_state(state, "student" if method == "supervised" else "teacher")
    )
    if method == "supervised":
        reliable = torch.full((datamodule.num_classes,), supervised_reference_threshold())
        uncertain = reliable.clone()
    else:
        reliable, uncertain = state["reliable_thresholds"], state["uncertain_thresholds"]
    prior = labeled_class_prior(datamodule)
    # The whole unlabeled split, through the test transform, in the val batch format.
    loader = datamodule.reference_dataloader(len(datamodule.unlabeled_dataset), seed=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return pseudo_label_statistics(
        detector.to(device), loader, reliable, uncertain, prior.class_ratios, prior.num_classes
    )


# ------------------------------------------------------------------------------------ report
# (column header, value of a run, format of one value); values scaled for reading.
COLUMNS: list[tuple[str, Any, str]] = [
    ("mAP", lambda r: 100 * r.metrics["map"], "{:.1f}"),
    ("AP50", lambda r: 100 * r.metrics["map_50"], "{:.1f}"),
    ("pseudo precision %", lambda r: 100 * r.pseudo["precision"], "{:.1f}"),
    ("reliable precision %", lambda r: 100 * r.pseudo["reliable_precision"], "{:.1f}"),
    ("pseudo boxes / img", lambda r: r.pseudo["pseudo_per_image"], "{:.2f}"),
    ("reliable boxes / img", lambda r: r.pseudo["reliable_per_image"], "{:.2f}"),
    ("GT boxes / img", lambda r: r.pseudo["gt_per_image"], "{:.2f}"),
    ("KL(pseudo ‖ prior)", lambda r: r.pseudo["kl_to_prior"], "{:.3f}"),
    ("KL(pseudo ‖ GT)", lambda r: r.pseudo["kl_to_gt"], "{:.3f}"),
]


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value); NaN if any value is NaN."""
    if any(math.isnan(v) for v in values):
        return math.nan, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def format_cell(values: Sequence[float], fmt: str) -> str:
    mean, std = mean_and_std(values)
    if math.isnan(mean):
        return "—"
    return fmt.format(mean) if std is None else f"{fmt.format(mean)} ± {fmt.format(std)}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(runs_by_method: dict[str, list[Run]]) -> str:
    rows = []
    for method, runs in runs_by_method.items():
        cells = [format_cell([get(r) for r in runs], fmt) for _, get, fmt in COLUMNS]
        rows.append([method, runs[0].evaluated, *cells])
    return table(["method", "model", *(name for name, _, _ in COLUMNS)], rows)


def per_run_table(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        cells = [format_cell([get(run)], fmt) for _, get, fmt in COLUMNS]
        rows.append([run.method, str(run.seed), *cells, f"`{shown(run.run_dir)}`"])
    return table(["method", "seed", *(name for name, _, _ in COLUMNS), "run"], rows)


def target_lines(runs_by_method: dict[str, list[Run]]) -> list[str]:
    """PASS/SHORT per target, on the mean mAP over seeds (in points)."""
    if "labelmatch" not in runs_by_method:
        return ["- Targets not checked: labelmatch was not run."]
    ours = statistics.mean(100 * r.metrics["map"] for r in runs_by_method["labelmatch"])
    lines = []
    for baseline, margin in TARGETS.items():
        if baseline not in runs_by_method:
            lines.append(f"- labelmatch ≥ {baseline} + {margin:g} mAP: not measured")
            continue
        theirs = statistics.mean(100 * r.metrics["map"] for r in runs_by_method[baseline])
        delta = ours - theirs
        verdict = "PASS" if delta >= margin else "SHORT"
        lines.append(
            f"- labelmatch ≥ {baseline} + {margin:g} mAP: **{verdict}** "
            f"(labelmatch {ours:.1f} vs {baseline} {theirs:.1f}: {delta:+.1f} points"
            + ("" if verdict == "PASS" else f", {margin - delta:.1f} short")
            + ")"
        )
    return lines


def shown(path: Path) -> str:
    """A path as written in the report: relative to the working directory when inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def render(
    runs: Sequence[Run],
    command: str,
    runs_dir: Path,
    seeds: Sequence[int],
    overrides: Sequence[str],
    experiment: str,
) -> str:
    runs_by_method: dict[str, list[Run]] = {}
    for run in runs:
        runs_by_method.setdefault(run.method, []).append(run)
    steps = sorted({run.results["steps"] for run in runs})
    steps_text = str(steps[0]) if len(steps) == 1 else f"DIFFER across runs: {steps}"
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    fixed = supervised_reference_threshold()
    recipe = " ".join(overrides)
    run_command = shlex.join(
        ["python", "-m", "labelmatch.run", "method=M", "seed=S"]
        + [f"hydra.run.dir={shown(runs_dir)}/M-sS", *overrides]
    )
    return "\n".join(
        [
            "## Pseudo-label quality: supervised vs mean teacher vs LabelMatch"
            + ("" if experiment == "digits" else f" ({experiment})"),
            "",
            f"Command: `{command}`",
            "",
            f"- Machine: {machine_description()}",
            f"- Date: {now}",
            f"- Recipe: {recipe}; training steps: {steps_text}; seeds: "
            f"{' '.join(map(str, seeds))} (mean ± sample std over seeds)",
            f"- Each run: `{run_command}`"
            + "".join(
                f"; {name} is `method={base} {' '.join(extra)}`"
                for name, (base, extra) in VARIANTS.items()
                if name in runs_by_method
            ),
            "",
            "Targets (mean mAP over seeds, points):",
            "",
            *target_lines(runs_by_method),
            "",
            summary_table(runs_by_method),
            "",
            "How to read it:",
            "",
            "- mAP / AP50: COCO AP@[.5:.95] / AP@.5 (×100) of the final teacher (the student for "
            "supervised) on the val split, from the run's `results.json`.",
            "- Pseudo labels: the final model's detections on every unlabeled image (test "
            "transform), split per class by the run's final thresholds exactly as in training: "
            f"LabelMatch's last ACT thresholds, mean teacher's fixed {fixed:g}. The supervised "
            f"row is a reference: its student at mean teacher's {fixed:g}, i.e. the pseudo "
            "labels a mean teacher starts from. *pseudo* = reliable + uncertain boxes (the same "
            "set for a single threshold); RPLM promotions happen per batch in training and are "
            "not reflected.",
            "- Precision (Fig. 4a): share of pseudo boxes with IoU ≥ 0.5 to a ground-truth box "
            "of their class, greedy one-to-one by score (a duplicate is a false positive).",
            "- Boxes per image (Fig. 4b) next to the unlabeled split's ground truth per image.",
            "- KL (Fig. 4c): KL(pseudo ‖ reference) in nats of the class distributions; the "
            "reference is the labeled prior ACT aims at, or the unlabeled ground truth.",
            "",
            "Per run:",
            "",
            per_run_table(runs),
        ]
    )


def write_section(path: Path, section: str, experiment: str) -> None:
    """Replace the quality section of `path` (between the markers), or add it."""
    replace_section(path, *section_markers(experiment), section)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--experiment",
        default="digits",
        help="the recipe: digits (default), digits_1pct, digits_5pct or digits_10pct",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        help="where the runs go (default: outputs/bench-quality/EXPERIMENT)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="use run dirs that already hold results.json"
    )
    # Hydra overrides (key=value, +key=value, ~key) may come anywhere, even after --seeds 0 1.
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    args = parser.parse_args([a for a in argv if a not in overrides])
    set_by_options = ("method", "seed", "experiment")
    banned = [o for o in overrides if o.split("=")[0].lstrip("+~") in set_by_options]
    if banned:
        parser.error(
            f"{banned}: experiment, method and seed are set by --experiment, --methods, --seeds"
        )
    args.runs_dir = args.runs_dir or Path("outputs/bench-quality") / args.experiment
    return args, [f"experiment={args.experiment}", *overrides]


def main(argv: Sequence[str]) -> None:
    args, overrides = parse_args(argv)
    runs_dir = args.runs_dir.resolve()
    jobs = [(method, seed) for method in args.methods for seed in args.seeds]
    runs = []
    for index, (method, seed) in enumerate(jobs, start=1):
        label = f"[{index}/{len(jobs)}] {method} seed {seed}:"
        run_dir = runs_dir / f"{method}-s{seed}"
        results = ensure_trained(method, seed, run_dir, overrides, args.reuse, label)
        print(f"{label} pseudo-label statistics on the unlabeled split", flush=True)
        run = Run(method, seed, run_dir, results, run_pseudo_statistics(run_dir, method))
        print(
            f"{label} {run.evaluated} mAP {100 * run.metrics['map']:.1f}, pseudo precision "
            f"{100 * run.pseudo['precision']:.1f} %, {run.pseudo['pseudo_per_image']:.2f} "
            f"pseudo vs {run.pseudo['gt_per_image']:.2f} GT boxes per image",
            flush=True,
        )
        runs.append(run)
    command = shlex.join(["python", os.path.relpath(sys.argv[0]), *argv])
    section = render(runs, command, runs_dir, args.seeds, overrides, args.experiment)
    write_section(args.out, section, args.experiment)
    print(f"wrote {args.out}")
    for line in target_lines({m: [r for r in runs if r.method == m] for m in args.methods}):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
