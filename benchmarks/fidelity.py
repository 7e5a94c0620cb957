"""Fidelity measurements of one checkpoint: the uncertain overlap metric and the eval score floor.

    PYTHONPATH=. python benchmarks/fidelity.py CKPT [--batches 20] [--out docs/benchmarks.md]
                                               [data overrides]

1. Uncertain overlap (docs/method.md §3): on `--batches` unlabeled training batches (the run's
   own data config and pseudo-labelling: teacher on the weak view, the checkpoint's ACT
   thresholds, RPLM at its official 0.8 / 0.8), the unlabeled branch runs once with
   `uncertain_metric=iou` (official) and once with `iof`, on the same views and the same sampling
   seed. Per image: uncertain pseudo boxes (the same under both), proposals drawn into the
   uncertain group, and boxes RPLM promotes. The official 1 % COCO log has 6.04 uncertain and
   0.93 mined boxes per image.
2. Score floor (docs/method.md §1): the teacher's COCO AP on the val split at the official
   test-time floor 0.001 and at 0.05.

Writes the figures as JSON to stdout and, with `--out`, to the `<!-- fidelity:begin -->` section.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from benchmark_report import fitted_datamodule, machine_description, replace_section
from omegaconf import OmegaConf

from labelmatch.checkpoints import load_module, training_config
from labelmatch.method import criterion
from labelmatch.method.assignment import ProposalKind
from labelmatch.method.module import LabelMatchModule
from labelmatch.method.teacher import score_floor

MARKERS = ("<!-- fidelity:begin -->", "<!-- fidelity:end -->")
METRICS = ("iou", "iof")
FLOORS = (0.001, 0.05)


def uncertain_counts(
    module: LabelMatchModule, batches: list[dict[str, Any]], metric: str, seed: int
) -> dict[str, float]:
    """Per image: uncertain pseudo boxes, uncertain-group rows, mined boxes, under `metric`."""
    config = module.criterion.config
    module.criterion = criterion.UnlabeledCriterion(replace(config, uncertain_metric=metric))
    rows, totals, images = 0, {"uncertain_per_image": 0.0, "mined_per_image": 0.0}, 0
    original_sample_rois = criterion.sample_rois

    def counting_sample_rois(*args, **kwargs):
        nonlocal rows
        rois = original_sample_rois(*args, **kwargs)
        rows += int((rois.kind == ProposalKind.UNCERTAIN).sum())
        return rois

    criterion.sample_rois = counting_sample_rois
    try:
        for batch in batches:
            torch.manual_seed(seed)  # the same ROI sampling draws under both metrics
            with torch.no_grad():
                _, pseudo, _ = module.unsupervised_step(batch)
            uncertain = sum(len(p.uncertain_boxes) for p in pseudo.pseudo_strong)
            totals["uncertain_per_image"] += uncertain
            totals["mined_per_image"] += pseudo.num_mined
            images += len(batch["strong"])
    finally:
        criterion.sample_rois = original_sample_rois
    return {
        "uncertain_boxes_per_image": totals["uncertain_per_image"] / images,
        "uncertain_rows_per_image": rows / images,
        "mined_per_image": totals["mined_per_image"] / images,
        "images": images,
    }


def teacher_ap(module: LabelMatchModule, loader) -> dict[str, float]:
    """The teacher's COCO mAP / AP50 / AR@100 at each score floor."""
    results = {}
    for floor in FLOORS:
        with score_floor(module.teacher.roi_heads, floor):
            metrics = module.evaluate_loader(module.teacher, loader)
        results[str(floor)] = {k: metrics[k] for k in ("map", "map_50", "mar_100")}
    return results


def measure(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    module, checkpoint = load_module(args.checkpoint)
    if module.teacher is None or not bool(module.teacher_ready):
        sys.exit(f"{args.checkpoint}: no trained teacher (a LabelMatch checkpoint is needed)")
    trained = training_config(args.checkpoint)
    if trained is None:
        sys.exit(f"{args.checkpoint}: its run directory has no .hydra/config.yaml")
    data_cfg = OmegaConf.merge(trained.data, OmegaConf.from_dotlist(overrides))
    datamodule = fitted_datamodule(data_cfg)
    module.hparams.val_json = str(datamodule.splits.val_json)
    # RPLM on, at the run's thresholds, whatever the run had (the counts include mined boxes).
    config = module.criterion.config
    module.criterion = criterion.UnlabeledCriterion(
        replace(config, rplm=replace(config.rplm, enabled=True))
    )
    module.student.train()  # the unlabeled branch runs the student's training path
    module.teacher.eval()

    loader = iter(datamodule.train_dataloader()["unlabeled"])
    batches = [next(loader) for _ in range(args.batches)]
    counts = {metric: uncertain_counts(module, batches, metric, args.seed) for metric in METRICS}
    floors = teacher_ap(module, datamodule.val_dataloader())
    return {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "step": checkpoint.get("global_step"),
        "batches": args.batches,
        "batch_size": len(batches[0]["strong"]),
        "reliable_thresholds": module.reliable_thresholds.tolist(),
        "uncertain_thresholds": module.uncertain_thresholds.tolist(),
        "uncertain_metric": counts,
        "teacher_ap_by_floor": floors,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "command": " ".join(["python", "benchmarks/fidelity.py", *sys.argv[1:]]),
    }


def section(result: dict[str, Any]) -> str:
    iou, iof = result["uncertain_metric"]["iou"], result["uncertain_metric"]["iof"]
    low, high = result["teacher_ap_by_floor"]["0.001"], result["teacher_ap_by_floor"]["0.05"]
    lines = [
        "## Fidelity: uncertain overlap and eval score floor (`benchmarks/fidelity.py`)",
        "",
        f"- Command: `{result['command']}`",
        f"- Machine: {result['machine']}; {result['date']}",
        f"- Checkpoint: step {result['step']}; {iou['images']} unlabeled images "
        f"({result['batches']} batches of {result['batch_size']})",
        "",
        "| per unlabeled image | iou (official) | iof |",
        "|---|---|---|",
        f"| uncertain pseudo boxes | {iou['uncertain_boxes_per_image']:.2f} "
        f"| {iof['uncertain_boxes_per_image']:.2f} |",
        f"| proposals in the uncertain group | {iou['uncertain_rows_per_image']:.2f} "
        f"| {iof['uncertain_rows_per_image']:.2f} |",
        f"| boxes mined by RPLM | {iou['mined_per_image']:.2f} | {iof['mined_per_image']:.2f} |",
        "",
        "| teacher on val | floor 0.001 (official) | floor 0.05 |",
        "|---|---|---|",
        *(
            f"| {name} | {100 * low[key]:.1f} | {100 * high[key]:.1f} |"
            for name, key in (("mAP", "map"), ("AP50", "map_50"), ("AR@100", "mar_100"))
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="ROI sampling seed of each batch")
    parser.add_argument("--out", type=Path, default=None, help="update this file's section")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str]) -> None:
    args, overrides = parse_args(argv)
    result = measure(args, overrides)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        replace_section(args.out, *MARKERS, section(result))


if __name__ == "__main__":
    main(sys.argv[1:])
