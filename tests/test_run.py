"""End-to-end runs of the real entry point (`python -m labelmatch.run`) on the smoke experiment."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labelmatch.evaluation.coco_eval import evaluate_coco

METRIC_KEYS = {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"}


def run_cli(run_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "labelmatch.run", f"hydra.run.dir={run_dir}", *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def train_cli(run_dir: Path, cache_dir: Path, *overrides: str) -> Path:
    result = run_cli(run_dir, cache_dir, *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def logged(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_dir) -> Path:
    """LabelMatch on the smoke experiment, trained once for all the tests below."""
    return train_cli(tmp_path_factory.mktemp("smoke"), cache_dir, "experiment=smoke")


def test_smoke_run_writes_every_artefact(smoke_run: Path) -> None:
    for name in ("results.json", "metrics.csv", "eval/student.json", "eval/teacher.json"):
        assert (smoke_run / name).is_file(), name
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()
    assert (smoke_run / ".hydra" / "config.yaml").is_file()


def test_results_json_has_student_teacher_burn_in_and_thresholds(smoke_run: Path) -> None:
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["method"] == "labelmatch"
    assert results["steps"] == 60
    assert Path(results["val_json"]).is_file()
    for model in ("student", "teacher", "burn_in"):
        assert METRIC_KEYS <= set(results[model]), model
        assert list(results[model]["per_class"]) == [str(d) for d in range(10)]
    for kind in ("reliable", "uncertain"):
        thresholds = results["act"][kind]
        assert list(thresholds) == [str(d) for d in range(10)]
        assert all(0.05 - 1e-6 <= t <= 1.0 for t in thresholds.values())
    assert all(
        results["act"]["reliable"][c] >= results["act"]["uncertain"][c] - 1e-6
        for c in results["act"]["reliable"]
    )


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_reported_ap_equals_cocoeval_on_the_written_detections(smoke_run: Path, model) -> None:
    results = json.loads((smoke_run / "results.json").read_text())
    detections = json.loads((smoke_run / "eval" / f"{model}.json").read_text())
    assert detections, "the smoke model should detect something"
    assert {"image_id", "category_id", "bbox", "score"} == set(detections[0])
    gt = COCO(results["val_json"])
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert results[model]["map"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert results[model]["map_50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    recomputed = evaluate_coco(results["val_json"], detections)
    assert recomputed["map"] == pytest.approx(evaluator.stats[0])


def test_act_refreshes_and_both_kinds_of_pseudo_labels_appear(smoke_run: Path) -> None:
    log = (smoke_run / "run.log").read_text()
    assert "ACT refresh 2 at step" in log
    rows = read_metrics(smoke_run)
    assert max(logged(rows, "pseudo/reliable_per_image")) > 0
    assert max(logged(rows, "pseudo/uncertain_per_image")) > 0
    assert logged(rows, "act/reliable/0") and logged(rows, "act/uncertain/9")
    for term in ("rpn_objectness", "rpn_box", "roi_cls", "roi_box", "roi_soft"):
        assert logged(rows, f"train/unsup/{term}"), term
    assert logged(rows, "train/sup_loss") and logged(rows, "teacher/map")


def test_checkpoint_holds_student_teacher_thresholds_and_step(smoke_run: Path) -> None:
    checkpoint = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    assert checkpoint["global_step"] == 60
    assert any(k.startswith("student.") for k in state)
    assert any(k.startswith("teacher.") for k in state)
    assert bool(state["teacher_ready"])
    results = json.loads((smoke_run / "results.json").read_text())
    assert state["reliable_thresholds"].tolist() == pytest.approx(
        list(results["act"]["reliable"].values())
    )
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]


@pytest.mark.parametrize("method", ["supervised", "mean_teacher"])
def test_baselines_run_end_to_end(tmp_path, cache_dir, method) -> None:
    run_dir = train_cli(
        tmp_path / method, cache_dir, "experiment=smoke", f"method={method}",
        "trainer.max_steps=44", "trainer.val_check_interval=22",
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method and results["steps"] == 44
    if method == "supervised":
        assert "teacher" not in results and "act" not in results
    else:
        assert list(results["act"]["reliable"].values()) == pytest.approx([0.7] * 10)
        assert "teacher" in results and "burn_in" in results


def test_missing_data_is_one_clear_error_before_any_model_is_built(tmp_path, cache_dir) -> None:
    missing = tmp_path / "nowhere" / "labeled.json"
    result = run_cli(
        tmp_path / "run", cache_dir, "data=coco", f"data.image_dir={tmp_path}",
        f"data.labeled_json={missing}", f"data.val_json={missing}", "method=supervised",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert str(missing) in output
    assert "Traceback" not in output


def test_coco_data_with_non_contiguous_category_ids_round_trips(tmp_path, cache_dir) -> None:
    """`data=coco` reads any COCO json through the same code as the digits; the written
    detections carry the dataset's own (here non-contiguous) category ids."""
    from labelmatch.data.digits import DigitsSplits

    splits = DigitsSplits(str(cache_dir / "digits"), num_labeled=8, num_unlabeled=8, num_val=8)
    splits = splits.resolve()
    remapped = {}
    for name in ("labeled", "val"):
        coco = json.loads(Path(getattr(splits, f"{name}_json")).read_text())
        for category in coco["categories"]:
            category["id"] = category["id"] * 7 + 3  # 10, 17, ..., 73
        for annotation in coco["annotations"]:
            annotation["category_id"] = annotation["category_id"] * 7 + 3
        remapped[name] = tmp_path / f"{name}.json"
        remapped[name].write_text(json.dumps(coco))
    run_dir = train_cli(
        tmp_path / "run", cache_dir, "data=coco", "method=supervised",
        f"data.image_dir={splits.image_dir}", f"data.labeled_json={remapped['labeled']}",
        f"data.val_json={remapped['val']}", "data.train_scales=[128]", "data.test_scale=128",
        "data.max_size=256", "data.num_workers=0", "data.labeled_batch_size=4",
        "trainer.max_steps=20", "trainer.val_check_interval=20",
    )  # fmt: skip
    detections = json.loads((run_dir / "eval" / "student.json").read_text())
    assert detections
    assert {d["category_id"] for d in detections} <= {c * 7 + 3 for c in range(1, 11)}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["val_json"] == str(remapped["val"])


def test_two_process_ddp_on_cpu_keeps_the_ranks_in_step(tmp_path, cache_dir) -> None:
    """Lightning's DDP (gloo) on 2 CPU processes: ACT scores are gathered with the strategy's
    collectives, so both ranks refresh to the same thresholds; val predictions are gathered, so
    both score the same burn-in mAP; nothing hangs when a batch has no pseudo labels."""
    run_dir = train_cli(
        tmp_path / "ddp", cache_dir, "experiment=smoke", "+trainer.strategy=ddp",
        "trainer.devices=2", "trainer.accelerator=cpu",
    )  # fmt: skip
    events = []
    for log_file in ("run.log", "train_ddp_process_1.log"):
        lines = (run_dir / log_file).read_text().splitlines()
        events.append(
            [
                line.split(" - ", 1)[1]
                for line in lines
                if "ACT refresh" in line or "burn-in done" in line
            ]
        )
    assert len(events[0]) >= 3, events[0]
    assert events[0] == events[1]
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 60
