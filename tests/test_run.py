"""End-to-end runs of the real entry point (`python -m labelmatch.run`) on the smoke experiment."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labelmatch.cli import one_line
from labelmatch.data.errors import DataError
from labelmatch.evaluation.coco_eval import evaluate_coco
from tests.conftest import run_cli, train_cli

METRIC_KEYS = {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"}


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def logged(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


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
    # The prior the last refresh aimed at, as that refresh logged it (`act/prior/*`).
    metrics = read_metrics(smoke_run)
    aimed = results["act"]["prior"]
    assert list(aimed["class_ratios"]) == [str(d) for d in range(10)]
    assert sum(aimed["class_ratios"].values()) == pytest.approx(1.0)
    for c, share in aimed["class_ratios"].items():
        assert share == pytest.approx(logged(metrics, f"act/prior/{c}")[-1])
    assert aimed["boxes_per_image"] == pytest.approx(
        logged(metrics, "act/prior/boxes_per_image")[-1]
    )
    # Counts of the run-health warnings (tests/test_run_health.py builds each symptom).
    assert set(results["health"]) == {
        "no_pseudo_labels",
        "too_many_pseudo_labels",
        "teacher_below_burn_in",
    }
    assert all(isinstance(n, int) and n >= 0 for n in results["health"].values())


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
    # every refresh reports what its pass cost, in the log and as a metric
    refresh_seconds = logged(rows, "act/refresh_seconds")
    assert len(refresh_seconds) == log.count("ACT reference pass:") == log.count("ACT refresh ")
    assert all(seconds > 0 for seconds in refresh_seconds)
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


def best_validation(run_dir: Path, monitor: str) -> tuple[int, float]:
    """(global step, value) of the highest `monitor` in metrics.csv, the earliest of equal ones.
    Lightning's CSV rows count steps from 0: a validation after step N is on row step N - 1."""
    rows = read_metrics(run_dir)
    validations = [(int(row["step"]) + 1, float(row[monitor])) for row in rows if row.get(monitor)]
    return max(validations, key=lambda validation: (validation[1], -validation[0]))


def test_best_checkpoint_is_the_teacher_at_its_best_validation(smoke_run: Path) -> None:
    """The validation at step 30 is still in burn-in (no teacher): no candidate, no error."""
    best = json.loads((smoke_run / "results.json").read_text())["best"]
    assert (best["checkpoint"], best["monitor"]) == ("checkpoints/best.ckpt", "teacher/map")
    step, teacher_map = best_validation(smoke_run, "teacher/map")
    assert best["step"] == step == 60
    assert best["teacher"]["map"] == pytest.approx(teacher_map)  # logged as float32
    assert METRIC_KEYS <= set(best["student"]) and METRIC_KEYS <= set(best["teacher"])
    checkpoint = torch.load(smoke_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert checkpoint["global_step"] == step
    assert bool(checkpoint["state_dict"]["teacher_ready"])
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("method", ["supervised", "mean_teacher"])
def test_baselines_run_end_to_end(reference_run, method) -> None:
    run_dir = reference_run(f"smoke_{method}")  # experiment=smoke method=METHOD, 60 steps
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method and results["steps"] == 60
    monitor = "student/map" if method == "supervised" else "teacher/map"
    assert results["best"]["monitor"] == monitor
    assert results["best"]["step"] == best_validation(run_dir, monitor)[0]
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["global_step"] == results["best"]["step"]
    if method == "supervised":
        assert "teacher" not in results and "act" not in results
    else:
        assert list(results["act"]["reliable"].values()) == pytest.approx([0.7] * 10)
        assert "teacher" in results and "burn_in" in results


def test_missing_data_is_one_clear_error_before_any_model_is_built(tmp_path, cache_dir) -> None:
    missing = tmp_path / "nowhere" / "labeled.json"
    result = run_cli(
        tmp_path / "run", cache_dir, "data=coco", f"data.splits.image_dir={tmp_path}",
        f"data.splits.labeled_json={missing}", f"data.splits.val_json={missing}",
        "method=supervised",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert str(missing) in output
    assert "Traceback" not in output


def test_coco_data_with_non_contiguous_category_ids_round_trips(tmp_path, cache_dir) -> None:
    """`data=coco` reads any COCO json through the same code as the digits; the written
    detections carry the dataset's own (here non-contiguous) category ids; the view sizes come
    from the images (128 px canvases: no upscaling to 800) and are saved in the run's config."""
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
        f"data.splits.image_dir={splits.image_dir}",
        f"data.splits.labeled_json={remapped['labeled']}",
        f"data.splits.val_json={remapped['val']}", "data.num_workers=0",
        "data.labeled_batch_size=4",
        "trainer.max_steps=20", "trainer.val_check_interval=20",
    )  # fmt: skip
    data = OmegaConf.load(run_dir / ".hydra" / "config.yaml").data
    assert list(data.train_scales) == list(data.strong_scales) == [96, 112, 128, 144, 160]
    assert (list(data.weak_scales), data.test_scale, data.max_size) == ([112, 128, 144], 128, 213)
    detections = json.loads((run_dir / "eval" / "student.json").read_text())
    assert detections
    assert {d["category_id"] for d in detections} <= {c * 7 + 3 for c in range(1, 11)}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["val_json"] == str(remapped["val"])


def test_two_process_ddp_on_cpu_keeps_the_ranks_in_step(tmp_path, cache_dir) -> None:
    """`trainer=ddp` (gloo) on 2 CPU processes: ACT scores are gathered with the strategy's
    collectives, so both ranks refresh to the same thresholds; val predictions are gathered, so
    both score the same burn-in mAP; after every validation and at the end both ranks hash their
    whole state (student, teacher, thresholds) and must agree; nothing hangs or turns NaN when a
    batch has no pseudo labels; only rank 0 writes the run's files."""
    run_dir = train_cli(
        tmp_path / "ddp", cache_dir, "experiment=smoke", "trainer=ddp",
        "trainer.devices=2", "trainer.accelerator=cpu",
    )  # fmt: skip
    events, digests = [], []
    for log_file in ("run.log", "train_ddp_process_1.log"):
        records = (run_dir / log_file).read_text().splitlines()
        # A record's first line is "[time][logger][level] - message" (the data table continues
        # over more lines).
        lines = [line.split(" - ", 1)[1] for line in records if line.startswith("[")]
        events.append([line for line in lines if "ACT refresh" in line or "burn-in done" in line])
        digests.append([line.split(": ")[-1] for line in lines if "state digest at step" in line])
    assert len(events[0]) >= 3, events[0]
    assert events[0] == events[1]
    assert len(digests[0]) == 3, digests[0]  # validations at steps 30 and 60, end of training
    assert digests[0] == digests[1]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 60
    assert all(math.isfinite(v) for v in logged(read_metrics(run_dir), "train/loss"))
    # The pseudo-label statistics, summed over the ranks by torchmetrics, are logged.
    boxes_per_image = logged(read_metrics(run_dir), "pseudo/boxes_per_image")
    assert boxes_per_image and all(math.isfinite(v) for v in boxes_per_image)
    written = {path.name for path in run_dir.iterdir()}
    assert written == {"results.json", "metrics.csv", "eval", "checkpoints", ".hydra", "run.log",
                       "hparams.yaml", "train_ddp_process_1.log", "plots"}  # fmt: skip


# ---- exact resume, interruption, bad checkpoints ------------------------------------------

# ACT refreshes every 8 steps from the end of burn-in on; one validation, at the end.
RESUME = (
    "experiment=smoke", "method.act.interval=8",
    "trainer.val_check_interval=40", "checkpoint_every_n_steps=20",
)  # fmt: skip


# Burn-in ends at step 16 (refreshes 16, 24, 32 on both sides of step 20), or at step 20 itself:
# the first half ends where the switch is due, so the resumed run makes it at its start, where
# the uninterrupted one makes it after its step 19. Online ACT with the estimated prior refreshes
# once, at step 16, and its queue updates after step 20 aim at that estimate, which only the
# checkpoint brings back (the module's `threshold_prior`).
@pytest.mark.parametrize(
    ("burn_in", "act"),
    [
        (16, ()),
        (20, ()),
        (
            16,
            (
                "method.act.mode=online",
                "method.act.prior=estimated",
                "method.act.estimator.min_score=0",
                "method.act.estimator.shift_test_level=null",  # aim at the estimate, always
            ),
        ),
    ],
    ids=["after_the_switch", "at_the_switch", "online_estimated_prior"],
)
def test_a_run_resumed_at_step_20_ends_exactly_as_an_uninterrupted_one(
    tmp_path, cache_dir, monkeypatch, burn_in, act
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread: one summation order
    resume = (*RESUME, f"method.burn_in_steps={burn_in}", *act)
    whole = train_cli(tmp_path / "whole", cache_dir, *resume, "trainer.max_steps=40")
    # ckpt_path=auto, as a requeued job runs: a fresh start in a new directory, then the
    # directory's own last.ckpt (an explicit ckpt_path=.../last.ckpt is the same resume).
    halves = train_cli(tmp_path / "halves", cache_dir, *resume, "trainer.max_steps=20",
                       "ckpt_path=auto")  # fmt: skip
    checkpoint = halves / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 20
    assert "ckpt_path=auto: no" in (halves / "run.log").read_text()
    train_cli(halves, cache_dir, *resume, "trainer.max_steps=40", "ckpt_path=auto")
    assert f"ckpt_path=auto: resuming from {checkpoint}" in (halves / "run.log").read_text()
    resumed = json.loads((halves / "results.json").read_text())
    uninterrupted = json.loads((whole / "results.json").read_text())
    assert resumed["steps"] == 40
    assert resumed == uninterrupted  # metrics, burn-in metrics, thresholds: all equal
    log = (halves / "run.log").read_text()
    assert f"burn-in done at step {burn_in}" in log
    if act:  # one refresh, before step 20; the estimate it aimed at, restored
        assert "ACT refresh 1 at step 16" in log and "ACT refresh 2" not in log
        labeled = logged(read_metrics(whole), "act/labeled_prior/boxes_per_image")
        assert resumed["act"]["prior"]["boxes_per_image"] != pytest.approx(labeled[0])
    else:
        assert f"ACT refresh 3 at step {burn_in + 16}" in log
    states = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in (whole, halves)
    ]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_sigterm_saves_a_loadable_last_checkpoint_and_exits(tmp_path, cache_dir, stop) -> None:
    run_dir = tmp_path / "run"
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "labelmatch.run", f"hydra.run.dir={run_dir}",
        "experiment=smoke", "trainer.max_steps=1000", "checkpoint_every_n_steps=4",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wait for training to be under way (the step-4 checkpoint)
    process.send_signal(getattr(signal, stop))  # Ctrl-C is routed through SIGTERM's path
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert f"stopped by {stop} at step" in output
    checkpoint = torch.load(last, weights_only=False)
    assert 4 <= checkpoint["global_step"] < 1000
    assert "RandomStates" in {key.split("{")[0] for key in checkpoint["callbacks"]}
    assert "threshold_refreshes" in checkpoint["state_dict"]
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]
    assert any(key.startswith("teacher.") for key in checkpoint["state_dict"])
    assert not (run_dir / "results.json").exists()
    assert not list(last.parent.glob("*.tmp"))  # nothing half-written left behind


@pytest.mark.parametrize(
    ("stop", "overrides"),
    [
        ("SIGTERM", ()),
        ("SIGINT", ()),
        # A validation at every step, 17 val images in batches of 8: rank 0 holds two val
        # batches, rank 1 one, so a stop inside the validation would part them.
        ("SIGTERM", ("trainer.val_check_interval=1", "data.splits.num_val=17")),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM, a validation at every step"],
)
def test_a_signal_to_every_ddp_rank_stops_them_together_and_saves(
    tmp_path, cache_dir, stop, overrides
):
    """SLURM's pre-emption, `kill` of the process group and Ctrl-C in a terminal signal every
    rank. Lightning's handler broadcast from inside the handler, so the ranks issued different
    collectives: 6 of 11 such stops of this run hung or failed without saving (review,
    2026-12-04). Now both ranks stop after the same step (and its validation), save it and exit
    143."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    command = [
        sys.executable, "-m", "labelmatch.run", f"hydra.run.dir={run_dir}", "experiment=smoke",
        "trainer.max_steps=1000", "checkpoint_every_n_steps=4", "trainer=ddp",
        "trainer.devices=2", "trainer.accelerator=cpu", *overrides,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the signal reaches both ranks
    )  # fmt: skip
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # training under way (the step-4 checkpoint)
    time.sleep(1.5)  # somewhere inside a later step
    os.killpg(process.pid, getattr(signal, stop))
    try:
        output = process.communicate(timeout=120)[0].decode()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the ranks hung after {stop}: {process.communicate()[0].decode()[-3000:]}")
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    logs = [(run_dir / name).read_text() for name in ("run.log", "train_ddp_process_1.log")]
    steps = [re.findall(rf"stopped by {stop} at step (\d+)", text) for text in logs]
    assert len(steps[0]) == len(steps[1]) == 1 and steps[0] == steps[1], logs[0][-2000:]
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == int(steps[0][0]) > 4


RUNNER = """
import os, signal, sys, threading, time
from pathlib import Path

def runner_handler(signum, frame):  # as submitit's: requeue (here a line), then exit
    print("RUNNER: requeue", flush=True)
    sys.exit(77)

signal.signal(signal.SIGUSR2, runner_handler)
run_dir = Path(sys.argv[1])

def send():
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.2)
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGUSR2)

threading.Thread(target=send, daemon=True).start()
import labelmatch.run as run
conf = Path(run.__file__).resolve().parents[1] / "conf"  # Hydra finds it from the script
sys.argv = ["run.py", f"--config-path={conf}", f"hydra.run.dir={run_dir}", *sys.argv[2:]]
run.main()
"""


def test_a_job_runners_sigusr2_saves_the_step_before_its_handler_requeues(tmp_path, cache_dir):
    """Under hydra/launcher=slurm, submitit's SIGUSR2 handler (time limit, pre-emption)
    requeued the job and exited from inside the step, with no save: the requeued job lost the
    steps since the last periodic checkpoint (review, 2026-12-04). Now the run stops after the
    step, saves it, and then the runner's handler runs."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    overrides = ["experiment=smoke", "trainer.max_steps=1000", "checkpoint_every_n_steps=4"]
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(run_dir), *overrides], env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 77, output[-3000:]
    stopped = re.findall(r"stopped by SIGUSR2 at step (\d+)", output)
    assert len(stopped) == 1 and output.index("stopped by SIGUSR2") < output.index("RUNNER")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == int(stopped[0]) > 4


def test_checkpoint_of_other_classes_is_one_clear_error_before_training(tmp_path, cache_dir):
    plain = tmp_path / "five_classes.pth"
    torch.save({"roi_heads.box_predictor.cls_score.weight": torch.zeros(6, 8)}, plain)
    for option in (f"ckpt_path={plain}", f"method.init_from={plain}"):
        result = run_cli(tmp_path / "run", cache_dir, "experiment=smoke", option)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output[-3000:]
        assert f"{plain} has a classifier for 5 classes, the data has 10" in output
        assert "Traceback" not in output
        assert not (tmp_path / "run" / "metrics.csv").exists()  # training never started


def test_non_finite_loss_stops_with_a_clear_error_and_saves_the_state(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        run_dir, cache_dir, "experiment=smoke", "method=supervised", "optim.lr=1e4",
        "optim.warmup_steps=0", "trainer.max_steps=20", "trainer.gradient_clip_val=null",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "non-finite loss at step" in output and "lower optim.lr" in output
    assert "Traceback" not in output
    saved = list((run_dir / "checkpoints").glob("nonfinite-step*.ckpt"))
    assert len(saved) == 1 and str(saved[0]) in output
    step = int(saved[0].stem.removeprefix("nonfinite-step"))
    assert torch.load(saved[0], weights_only=False)["global_step"] == step
    assert not (run_dir / "results.json").exists()


class _UnreadableImages(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError(f"/data/{index}.png (image id {index}, a.json): cannot read or decode")


def test_a_data_error_raised_in_a_loader_worker_is_reported_as_its_own_line() -> None:
    loader = torch.utils.data.DataLoader(_UnreadableImages(), num_workers=1)
    with pytest.raises(DataError) as error:
        next(iter(loader))
    assert "Traceback" in str(error.value)  # how torch re-raises it in the main process
    assert one_line(error.value) == "/data/0.png (image id 0, a.json): cannot read or decode"
