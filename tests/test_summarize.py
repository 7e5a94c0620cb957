"""`python -m labelmatch.summarize`: per-job and mean ± std tables of a Hydra sweep, on a
hand-made sweep directory and on a real 2-job multirun of the smoke experiment."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from labelmatch.summarize import summarize


def fake_job(job_dir: Path, overrides: list[str], teacher_map: float | None) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if teacher_map is not None:
        metrics = {"map": teacher_map, "map_50": 2 * teacher_map, "map_75": teacher_map / 2}
        results = {"steps": 100, "teacher": metrics, "student": {**metrics, "map": 0.1}}
        (job_dir / "results.json").write_text(json.dumps(results))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_per_job_table_and_mean_std_over_folds(tmp_path) -> None:
    # alpha x fold sweep; fold 3 of alpha 0.4 failed (no results.json).
    maps = {("0.2", "1"): 0.30, ("0.2", "2"): 0.34, ("0.4", "1"): 0.20, ("0.4", "3"): None}
    for index, ((alpha, fold), value) in enumerate(maps.items()):
        overrides = ["experiment=coco_1pct", f"method.alpha={alpha}", f"data.splits.fold={fold}"]
        fake_job(tmp_path / str(index), overrides, value)
    text = summarize(tmp_path)
    assert "common overrides: experiment=coco_1pct" in text
    rows = read_csv(tmp_path / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["method.alpha"], r["data.splits.fold"], r["status"]) for r in rows][-1] == (
        "0.4", "3", "no results.json"
    )  # fmt: skip
    assert rows[0]["teacher mAP"] == "30.00" and rows[0]["teacher AP50"] == "60.00"
    assert rows[3]["teacher mAP"] == ""
    means = read_csv(tmp_path / "summary_mean.csv")
    assert [(m["method.alpha"], m["runs (over data.splits.fold)"]) for m in means] == [
        ("0.2", "2"), ("0.4", "1")
    ]  # fmt: skip
    # 30 and 34: mean 32, sample std 2.83; one run: its value alone.
    assert means[0]["teacher mAP"] == "32.00 ± 2.83"
    assert means[1]["teacher mAP"] == "20.00"
    assert (tmp_path / "summary.md").read_text() == text
    assert "| 0.2 | 2 | 32.00 ± 2.83 |" in text


def test_a_job_at_the_default_is_named_by_the_value_it_ran_with(tmp_path) -> None:
    """Runs compared across separate commands: one gave method=mean_teacher, the other ran at
    the default; the table names the default (the group's choice in .hydra/hydra.yaml, or the
    key's value in .hydra/config.yaml) instead of leaving it blank."""
    fake_job(tmp_path / "mt", ["method=mean_teacher", "method.alpha=0.3"], 0.2)
    fake_job(tmp_path / "lm", [], 0.3)
    (tmp_path / "lm" / ".hydra" / "hydra.yaml").write_text(
        OmegaConf.to_yaml({"hydra": {"runtime": {"choices": {"method": "labelmatch"}}}})
    )
    (tmp_path / "lm" / ".hydra" / "config.yaml").write_text(
        OmegaConf.to_yaml({"method": {"name": "labelmatch", "alpha": 0.2}})
    )
    text = summarize(tmp_path)
    rows = {r["job"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert (rows["lm"]["method"], rows["lm"]["method.alpha"]) == ("labelmatch", "0.2")
    assert (rows["mt"]["method"], rows["mt"]["method.alpha"]) == ("mean_teacher", "0.3")
    assert text.splitlines()[2].startswith("2 jobs, 2 with results.json")


def test_two_stage_runs_average_over_seeds_each_from_its_own_baseline(tmp_path) -> None:
    """Stage 2 of seed S starts from seed S's baseline: `method.init_from` differs with the
    seed, yet the means are per method, over the seeds."""
    maps = {("mean_teacher", "0"): 0.30, ("mean_teacher", "1"): 0.34, ("labelmatch", "0"): 0.40}
    for (method, seed), value in maps.items():
        init = f"method.init_from=runs/baseline-s{seed}/checkpoints/last.ckpt"
        overrides = ["experiment=glyphs_10pct", f"method={method}", init, f"seed={seed}"]
        fake_job(tmp_path / f"{method}-s{seed}", overrides, value)
    fake_job(tmp_path / "baseline-s0", ["experiment=glyphs_10pct_baseline", "seed=0"], 0.2)
    summarize(tmp_path)
    means = read_csv(tmp_path / "summary_mean.csv")
    assert [(m["experiment"], m["method"], m["runs (over seed)"]) for m in means] == [
        ("glyphs_10pct_baseline", "", "1"), ("glyphs_10pct", "labelmatch", "1"),
        ("glyphs_10pct", "mean_teacher", "2"),
    ]  # fmt: skip
    assert means[2]["teacher mAP"] == "32.00 ± 2.83"
    assert "method.init_from" not in means[0]
    # A copy of a job's folder repeats a seed with the same checkpoint: still one to one.
    shutil.copytree(tmp_path / "labelmatch-s0", tmp_path / "labelmatch-s0-copy")
    summarize(tmp_path)
    assert "method.init_from" not in read_csv(tmp_path / "summary_mean.csv")[0]
    # Two checkpoints for one seed are two settings: init_from groups again.
    fake_job(tmp_path / "mean_teacher-s0-other", [
        "experiment=glyphs_10pct", "method=mean_teacher", "method.init_from=other.ckpt", "seed=0"
    ], 0.5)  # fmt: skip
    summarize(tmp_path)
    means = read_csv(tmp_path / "summary_mean.csv")
    assert len(means) == 5 and "method.init_from" in means[0]


def test_one_checkpoint_for_two_seeds_is_a_setting(tmp_path) -> None:
    for seed, init in [("0", "a.ckpt"), ("1", "a.ckpt"), ("0", "b.ckpt")]:
        overrides = ["method=labelmatch", f"method.init_from={init}", f"seed={seed}"]
        fake_job(tmp_path / f"{init}-s{seed}", overrides, 0.3)
    summarize(tmp_path)
    means = read_csv(tmp_path / "summary_mean.csv")
    assert [(m["method.init_from"], m["runs (over seed)"]) for m in means] == [
        ("a.ckpt", "2"), ("b.ckpt", "1")
    ]  # fmt: skip


def test_two_experiments_each_from_their_own_baselines_average_over_seeds(tmp_path) -> None:
    """Seed 0 starts from one baseline per experiment: judged over the whole folder, seed 0
    had two checkpoints, so init_from became a setting and no row averaged anything (until
    2026-12-06); the map is one to one within each experiment."""
    for experiment, maps in [("glyphs_10pct", (0.30, 0.34)), ("glyphs_shift", (0.40, 0.44))]:
        for seed, value in enumerate(maps):
            init = f"method.init_from=outputs/{experiment}/baseline-s{seed}/checkpoints/last.ckpt"
            overrides = [f"experiment={experiment}", init, f"seed={seed}"]
            fake_job(tmp_path / f"{experiment}-s{seed}", overrides, value)
    summarize(tmp_path)
    means = read_csv(tmp_path / "summary_mean.csv")
    assert [(m["experiment"], m["runs (over seed)"], m["teacher mAP"]) for m in means] == [
        ("glyphs_10pct", "2", "32.00 ± 2.83"), ("glyphs_shift", "2", "42.00 ± 2.83")
    ]  # fmt: skip


def test_a_default_and_its_override_are_one_setting_however_written(tmp_path) -> None:
    """`ran_with` wrote the config's True and 0.0001 where the command lines said true and
    1e-4, so runs of one setting fell into two mean rows (until 2026-12-06)."""
    fake_job(tmp_path / "a", ["method.act.enabled=true", "optim.lr=1e-4", "seed=0"], 0.30)
    for seed, value in [(1, 0.34), (2, 0.32)]:
        fake_job(tmp_path / f"b{seed}", [f"seed={seed}"], value)
        (tmp_path / f"b{seed}" / ".hydra" / "config.yaml").write_text(
            OmegaConf.to_yaml({"method": {"act": {"enabled": True}}, "optim": {"lr": 0.0001}})
        )
    summarize(tmp_path)
    means = read_csv(tmp_path / "summary_mean.csv")
    assert [(m["runs (over seed)"], m["teacher mAP"]) for m in means] == [("3", "32.00 ± 2.00")]


def test_a_mean_over_fewer_runs_than_the_row_counts_says_so(tmp_path) -> None:
    for seed, value in [(0, 0.30), (1, float("nan")), (2, 0.32)]:
        fake_job(tmp_path / f"s{seed}", ["method.alpha=1", f"seed={seed}"], value)
    summarize(tmp_path)
    [mean] = read_csv(tmp_path / "summary_mean.csv")
    assert (mean["runs (over seed)"], mean["teacher mAP"]) == ("3", "31.00 ± 1.41 (2 of 3)")


def test_no_mean_table_when_no_seed_or_fold_varies(tmp_path) -> None:
    for index, alpha in enumerate(["0.1", "0.2"]):
        fake_job(tmp_path / str(index), [f"method.alpha={alpha}", "seed=1"], 0.25)
    text = summarize(tmp_path)
    assert "Mean ±" not in text and not (tmp_path / "summary_mean.csv").exists()
    assert "common overrides: seed=1" in text


def test_two_job_multirun_of_the_smoke_experiment_then_summarize(tmp_path, cache_dir) -> None:
    """One Hydra basic-sweeper job per alpha, each with its own run dir and results.json (the
    default CSV logger), then the summary of both."""
    sweep = tmp_path / "sweep"
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "labelmatch.run", "-m", "experiment=smoke",
         "method.alpha=0.1,0.2", f"hydra.sweep.dir={sweep}", "trainer.max_steps=16",
         "method.burn_in_steps=8", "trainer.val_check_interval=16",
         "checkpoint_every_n_steps=16"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for job, alpha in (("0", 0.1), ("1", 0.2)):
        assert OmegaConf.load(sweep / job / ".hydra" / "config.yaml").method.alpha == alpha
        assert json.loads((sweep / job / "results.json").read_text())["steps"] == 16
        assert (sweep / job / "metrics.csv").is_file()
    summary = subprocess.run(
        [sys.executable, "-m", "labelmatch.summarize", str(sweep)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["method.alpha"], r["status"], r["steps"]) for r in rows] == [
        ("0", "0.1", "ok", "16"), ("1", "0.2", "ok", "16")
    ]  # fmt: skip
    for row, job in zip(rows, ("0", "1")):
        teacher = json.loads((sweep / job / "results.json").read_text())["teacher"]
        assert float(row["teacher mAP"]) == pytest.approx(100 * teacher["map"], abs=0.005)
    assert summary.stdout == (sweep / "summary.md").read_text()
