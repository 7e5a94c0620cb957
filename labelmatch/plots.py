"""The paper's pictures of a run, drawn from its `metrics.csv` (no wandb needed).

Threshold trajectories per class; pseudo-label vs prior class distribution (Fig. 1); precision,
boxes per image and KL divergence over training (Fig. 4 a-c); per-class val AP of student and
teacher, head to tail classes (Tab. 4); strong views with reliable (green) and uncertain (yellow)
pseudo boxes (Fig. 5). Figures are built with matplotlib's object API (`Figure`, no pyplot), so
they render off-screen in training and inline in a notebook alike.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from labelmatch.method.pseudo_labels import PseudoLabels

Series = tuple[list[int], list[float]]  # (steps, values) of one logged name

RELIABLE_COLOUR, UNCERTAIN_COLOUR = "lime", "yellow"


def read_metrics(path: str | Path) -> dict[str, Series]:
    """Every logged name of a Lightning `metrics.csv` with its (steps, values), empty cells and
    NaN left out."""
    series: dict[str, Series] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row["step"]))
            for name, cell in row.items():
                if name == "step" or cell in ("", None) or math.isnan(float(cell)):
                    continue
                steps, values = series.setdefault(name, ([], []))
                steps.append(step)
                values.append(float(cell))
    return series


def read_run_metrics(run_dir: str | Path) -> dict[str, Series]:
    """`read_metrics` over a run's whole history: a run resumed in its own directory has moved
    its earlier logs to `metrics.<n>.csv` (n = 1, 2, ...) before writing `metrics.csv` afresh.
    A run stopped after its last checkpoint logged steps that the resumed run trains and logs
    again: each later file replaces what the earlier ones logged from its first step on."""
    run_dir = Path(run_dir)
    numbered = [p for p in run_dir.glob("metrics.*.csv") if p.suffixes[0][1:].isdigit()]
    earlier = sorted(numbered, key=lambda p: int(p.suffixes[0][1:]))
    series: dict[str, Series] = {}
    for path in [*earlier, run_dir / "metrics.csv"]:
        if not path.is_file():
            continue
        later = read_metrics(path)
        first = min((steps[0] for steps, _ in later.values() if steps), default=None)
        if first is not None:  # what the resumed run logged again replaces the earlier points
            for name, (steps, values) in series.items():
                kept = [i for i, step in enumerate(steps) if step < first]
                series[name] = ([steps[i] for i in kept], [values[i] for i in kept])
        for name, (steps, values) in later.items():
            series.setdefault(name, ([], []))
            series[name][0].extend(steps)
            series[name][1].extend(values)
    return {name: points for name, points in series.items() if points[0]}


def latest(metrics: dict[str, Series], prefix: str, class_names: Sequence[str]) -> list[float]:
    """Last logged value of `<prefix>/<class>` per class (NaN where never logged)."""
    return [
        metrics[f"{prefix}/{c}"][1][-1] if f"{prefix}/{c}" in metrics else math.nan
        for c in class_names
    ]


def plot_thresholds(metrics: dict[str, Series], class_names: Sequence[str]) -> Figure | None:
    """ACT's per-class reliable (solid) and uncertain (dashed) thresholds over training."""
    if not any(f"act/reliable/{c}" in metrics for c in class_names):
        return None
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.subplots()
    colours = _class_colours(len(class_names))
    for name, colour in zip(class_names, colours):
        for kind, style in (("reliable", "-"), ("uncertain", "--")):
            if f"act/{kind}/{name}" in metrics:
                steps, values = metrics[f"act/{kind}/{name}"]
                label = name if kind == "reliable" else None
                axes.plot(steps, values, style, color=colour, marker=".", label=label)
    axes.set(xlabel="step", ylabel="score threshold", ylim=(0, 1.02))
    axes.set_title("ACT thresholds per class (solid reliable, dashed uncertain)")
    axes.legend(ncol=2, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return figure


def plot_class_distribution(
    metrics: dict[str, Series], class_names: Sequence[str]
) -> Figure | None:
    """Fig. 1: the latest pseudo labels' class shares next to the labeled prior (and the
    unlabeled ground truth when it is known), classes head to tail."""
    if not any(f"pseudo/share/{c}" in metrics for c in class_names):
        return None
    bars = {"pseudo labels": latest(metrics, "pseudo/share", class_names)}
    # The prior ACT aimed at: the labeled one, or a manual, estimated or oracle prior.
    bars["ACT's prior"] = latest(metrics, "pseudo/prior_share", class_names)
    if any(f"pseudo/gt_share/{c}" in metrics for c in class_names):
        bars["unlabeled ground truth"] = latest(metrics, "pseudo/gt_share", class_names)
    order = _head_to_tail(bars["ACT's prior"])
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(bars)
    for index, (label, shares) in enumerate(bars.items()):
        offsets = [i + (index - (len(bars) - 1) / 2) * width for i in range(len(order))]
        axes.bar(offsets, [shares[i] for i in order], width, label=label)
    axes.set_xticks(range(len(order)), [class_names[i] for i in order])
    step = metrics[f"pseudo/share/{class_names[order[0]]}"][0][-1]
    axes.set(ylabel="share of boxes", title=f"class distribution at step {step}")
    axes.legend()
    return figure


def plot_class_prior(metrics: dict[str, Series], class_names: Sequence[str]) -> Figure | None:
    """The prior ACT used at its latest refresh (`act/prior/*`: estimated, oracle or manual)
    next to the labeled prior and, when the unlabeled json has annotations, the unlabeled
    set's (`act/unlabeled_prior/*`, counted over the whole json): (a) class shares, classes
    head to tail by the labeled prior; (b) boxes per image at each refresh. Only for runs
    whose prior is not the labeled one."""
    if not any(f"act/labeled_prior/{c}" in metrics for c in class_names):
        return None
    bars = {
        "labeled prior": latest(metrics, "act/labeled_prior", class_names),
        "ACT's prior (latest)": latest(metrics, "act/prior", class_names),
    }
    if any(f"act/unlabeled_prior/{c}" in metrics for c in class_names):
        bars["unlabeled ground truth"] = latest(metrics, "act/unlabeled_prior", class_names)
    order = _head_to_tail(bars["labeled prior"])
    figure = Figure(figsize=(12, 3.5), layout="constrained")
    shares, boxes = figure.subplots(1, 2, width_ratios=(2, 1))
    width = 0.8 / len(bars)
    for index, (label, values) in enumerate(bars.items()):
        offsets = [i + (index - (len(bars) - 1) / 2) * width for i in range(len(order))]
        shares.bar(offsets, [values[i] for i in order], width, label=label)
    shares.set_xticks(range(len(order)), [class_names[i] for i in order])
    shares.set(ylabel="share of boxes", title="(a) class prior")
    shares.legend(fontsize=7)
    steps, values = metrics.get("act/prior/boxes_per_image", ([], []))
    boxes.plot(steps, values, "-", marker=".", label="ACT's prior")
    for name, label, style in (
        ("act/labeled_prior/boxes_per_image", "labeled prior", ":"),
        ("act/unlabeled_prior/boxes_per_image", "unlabeled ground truth", "--"),
    ):
        if name in metrics:
            boxes.axhline(metrics[name][1][-1], linestyle=style, color="grey", label=label)
    boxes.set(xlabel="step", title="(b) boxes per image")
    boxes.legend(fontsize=7)
    return figure


def plot_pseudo_quality(metrics: dict[str, Series]) -> Figure | None:
    """Fig. 4: (a) precision / recall, (b) boxes per image, (c) KL divergence, over training."""
    panels = (
        ("(a) precision (IoU ≥ 0.5, same class)", ("precision", "reliable_precision", "recall")),
        (
            "(b) boxes per image",
            (
                "reliable_per_image",
                "uncertain_per_image",
                "mined_per_image",
                "boxes_per_image",
                "gt_per_image",
                "prior_per_image",
            ),
        ),  # fmt: skip
        ("(c) KL(pseudo ‖ reference)", ("kl_to_prior", "kl_to_gt")),
    )
    if not any(f"pseudo/{name}" in metrics for _, names in panels for name in names):
        return None
    figure = Figure(figsize=(12, 3.5), layout="constrained")
    for axes, (title, names) in zip(figure.subplots(1, 3), panels):
        for name in names:
            if f"pseudo/{name}" in metrics:
                steps, values = metrics[f"pseudo/{name}"]
                style = ":" if name in ("gt_per_image", "prior_per_image") else "-"
                axes.plot(steps, values, style, marker=".", label=name)
        axes.set(xlabel="step", title=title)
        if axes.lines:
            axes.legend(fontsize=7)
        else:  # e.g. no pseudo label was kept yet
            axes.text(0.5, 0.5, "not logged", ha="center", transform=axes.transAxes)
    return figure


def plot_per_class_ap(metrics: dict[str, Series], class_names: Sequence[str]) -> Figure | None:
    """Tab. 4: latest val AP@[.5:.95] per class of student and teacher, head to tail classes
    (by the class shares of the prior the pseudo labels were compared with, `pseudo/prior_share`:
    the labeled prior, or ACT's estimated, oracle or manual one; the given order when none was
    logged)."""
    models = [
        m for m in ("student", "teacher") if any(f"{m}/ap/{c}" in metrics for c in class_names)
    ]
    if not models:
        return None
    prior = latest(metrics, "pseudo/prior_share", class_names)
    order = _head_to_tail(prior)  # the given order when no prior was logged
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        ap = latest(metrics, f"{model}/ap", class_names)
        offsets = [i + (index - (len(models) - 1) / 2) * width for i in range(len(order))]
        axes.bar(offsets, [ap[i] for i in order], width, label=model)
    axes.set_xticks(range(len(order)), [class_names[i] for i in order])
    axes.set(ylabel="AP@[.5:.95]", ylim=(0, 1), title="val AP per class, head → tail")
    axes.legend()
    return figure


def draw_pseudo_labels(
    images: Sequence[Tensor], pseudo: Sequence[PseudoLabels], class_names: Sequence[str]
) -> Figure:
    """Fig. 5 style: views [3,H,W] in [0,1] with their reliable (green) and uncertain (yellow)
    pseudo boxes, in the views' own frame."""
    figure = Figure(figsize=(3 * len(images), 3.2), layout="constrained")
    for axes, image, labels in zip(
        figure.subplots(1, len(images), squeeze=False)[0], images, pseudo
    ):
        axes.imshow(image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
        for boxes, classes, colour in (
            (labels.reliable_boxes, labels.reliable_labels, RELIABLE_COLOUR),
            (labels.uncertain_boxes, labels.uncertain_labels, UNCERTAIN_COLOUR),
        ):
            for (x1, y1, x2, y2), label in zip(boxes.tolist(), classes.tolist()):
                axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour))
                axes.text(x1, y1, class_names[label - 1], color=colour, fontsize=7, va="bottom")
        axes.set_title(
            f"{len(labels.reliable_boxes)} reliable, {len(labels.uncertain_boxes)} uncertain",
            fontsize=8,
        )
        axes.axis("off")
    return figure


def write_plots(run_dir: str | Path, class_names: Sequence[str]) -> list[Path]:
    """Draw every figure the run's metrics.csv allows into `run_dir/plots/`; returns the files."""
    run_dir = Path(run_dir)
    metrics = read_run_metrics(run_dir)
    figures = {
        "thresholds.png": plot_thresholds(metrics, class_names),
        "class_distribution.png": plot_class_distribution(metrics, class_names),
        "class_prior.png": plot_class_prior(metrics, class_names),
        "pseudo_quality.png": plot_pseudo_quality(metrics),
        "per_class_ap.png": plot_per_class_ap(metrics, class_names),
    }
    written = []
    for name, figure in figures.items():
        if figure is not None:
            path = run_dir / "plots" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=100)
            written.append(path)
    return written


def _head_to_tail(shares: Sequence[float]) -> list[int]:
    """Class indices by decreasing share (classes without a share last, in their order)."""
    return sorted(range(len(shares)), key=lambda i: (math.isnan(shares[i]), -shares[i]))


def _class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """tab10's distinct colours up to 10 classes, evenly spaced turbo colours beyond."""
    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    return [colormaps["turbo"](i / (num_classes - 1)) for i in range(num_classes)]
