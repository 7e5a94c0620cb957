"""benchmarks/prior_shift.py: the run list composes, the commands name every run, the summary
reads finished runs and the targets are checked as docs/benchmarks.md states them."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config

spec = importlib.util.spec_from_file_location("prior_shift", REPO / "benchmarks/prior_shift.py")
prior_shift = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prior_shift)


@pytest.mark.parametrize("experiment", prior_shift.EXPERIMENTS)
def test_every_entry_composes_on_every_experiment(experiment: str) -> None:
    for _, overrides in prior_shift.ENTRIES:
        cfg = compose_config([f"experiment={experiment}", *overrides])
        assert cfg.method.name in ("labelmatch", "mean_teacher")


def test_commands_name_each_run_once() -> None:
    lines = prior_shift.commands(Path("runs"), ["digits_shift"], [0, 1])
    assert len(lines) == 2 * len(prior_shift.ENTRIES)
    assert lines[4] == (
        "python -m labelmatch.run experiment=digits_shift method=labelmatch "
        "method.act.prior=estimated seed=0 hydra.run.dir=runs/digits_shift/act_estimated_prior-s0"
    )


def test_two_stage_experiments_start_from_their_seeds_baseline() -> None:
    """The glyph experiments are two-stage: one baseline per seed, trained first and shared by
    glyphs_shift and glyphs_10pct (the same labeled fold), then every entry starts from it."""
    lines = prior_shift.commands(Path("runs"), ["glyphs_shift", "glyphs_10pct"], [0, 1])
    baselines = [line for line in lines if "experiment=glyphs_10pct_baseline" in line]
    assert (
        lines[:2]
        == baselines
        == [
            f"python -m labelmatch.run experiment=glyphs_10pct_baseline seed={seed} "
            f"hydra.run.dir=runs/baselines/glyphs_10pct_baseline-s{seed}"
            for seed in (0, 1)
        ]
    )
    assert len(lines) == 2 + 2 * 2 * len(prior_shift.ENTRIES)
    for line in lines[2:]:
        seed = line.split("seed=")[1][0]
        checkpoint = f"runs/baselines/glyphs_10pct_baseline-s{seed}/checkpoints/last.ckpt"
        assert f"method.init_from={checkpoint} seed={seed}" in line, line
    # The digits are one-stage: no baseline, no init_from.
    assert not any("init_from" in line for line in prior_shift.commands(Path("r"), ["digits"], [0]))


def test_targets() -> None:
    maps = {"act_labeled_prior": 50.0, "act_estimated_prior": 53.0, "act_oracle_prior": 56.0}
    assert prior_shift.check_targets(True, maps) == (True, "closes 50 % of a 6.00 mAP gap")
    assert not prior_shift.check_targets(True, {**maps, "act_estimated_prior": 52.9})[0]
    assert prior_shift.check_targets(False, {**maps, "act_estimated_prior": 49.5})[0]
    assert not prior_shift.check_targets(False, {**maps, "act_estimated_prior": 49.4})[0]


def _fake_run(directory: Path, teacher_map: float, kl: list[float], prior: str = "") -> None:
    """A finished run: results.json and a metrics.csv with the pseudo-label measures and ACT's
    prior at the last refresh: the labeled one (a: 3, b: 1 boxes) by default; with `prior`
    ("estimated": a: 2, b: 2; "oracle": a: 1, b: 3) also the labeled and the true unlabeled
    one (a: 1, b: 3), as ACTRefresh logs them."""
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"teacher": {"map": teacher_map}}))
    (directory / "revision.txt").write_text("abc1234\n")
    priors = {"act/prior": (3, 1)}  # ACT's prior: the labeled one unless set otherwise
    if prior:
        priors = {"act/labeled_prior": (3, 1), "act/unlabeled_prior": (1, 3)}
        priors["act/prior"] = {"estimated": (2, 2), "oracle": (1, 3)}[prior]
    keys = [f"{p}/{c}" for p in priors for c in ("a", "b", "boxes_per_image")]
    values = [v for counts in priors.values() for v in (*counts, sum(counts) / 2)]
    rows = [",".join(["step,pseudo/kl_to_gt,pseudo/boxes_per_image,pseudo/gt_per_image", *keys])]
    rows += [
        ",".join([f"{step},{k},3.0,4.0", *map(str, values)])
        for step, k in zip((500, 800, 1000), kl, strict=True)
    ]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_summary_reads_finished_runs(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        for name, teacher_map in [
            ("act_labeled_prior", 0.50),
            ("act_estimated_prior", 0.54),
            ("act_oracle_prior", 0.56),
        ]:
            prior = {"act_estimated_prior": "estimated", "act_oracle_prior": "oracle"}.get(name, "")
            directory = tmp_path / "digits_shift" / f"{name}-s{seed}"
            _fake_run(directory, teacher_map, [0.9, 0.2, 0.4], prior)
    labeled_run = tmp_path / "digits_shift" / "act_labeled_prior-s0"
    measured = prior_shift.measure(labeled_run, 250)
    assert measured["kl_to_gt"] == pytest.approx(0.3)  # steps 800 and 1000: within 250 of 1000
    assert measured["teacher_map"] == pytest.approx(50.0)
    # The labeled-prior run does not log the truth itself: its TV needs it from another run.
    assert math.isnan(measured["prior_tv"]) and measured["prior_boxes"] == 2.0
    # The first run that logged it: the labeled run did not, a missing one is passed over.
    missing = labeled_run.parent / "act_oracle_prior-s9"
    truth = prior_shift.ground_truth_shares([labeled_run, missing, *labeled_run.parent.iterdir()])
    assert truth == {"a": 0.25, "b": 0.75}
    # Labeled prior (0.75, 0.25) against the truth (0.25, 0.75): TV 0.5.
    assert prior_shift.measure(labeled_run, 250, truth)["prior_tv"] == pytest.approx(0.5)
    # The estimated run aims at (0.5, 0.5) and logs the truth itself: TV 0.25.
    estimated = prior_shift.measure(tmp_path / "digits_shift" / "act_estimated_prior-s0", 250)
    assert estimated["prior_tv"] == pytest.approx(0.25)

    table = prior_shift.summary(tmp_path, [0, 1, 2], 250)
    row = "| digits_shift | act_estimated_prior | 3 | 54.0 | 0.300 | 3.00 | 4.00 | 0.250 | 2.00 |"
    assert row + " abc1234 |" in table
    assert "| digits_shift | act_labeled_prior | 3 | 50.0 | 0.300 | 3.00 | 4.00 | 0.500 |" in table
    assert "| digits_shift | act_oracle_prior | 3 | 56.0 | 0.300 | 3.00 | 4.00 | 0.000 |" in table
    assert "- digits_shift: **PASS**, the estimate closes 67 % of a 6.00 mAP gap" in table
    # On one seed the same result holds but is not yet a verdict on the 3-seed mean.
    one_seed = prior_shift.summary(tmp_path, [0], 250)
    assert (
        "**NOT CHECKED**, the estimate closes 67 % of a 6.00 mAP gap; holds on 1 of 3" in one_seed
    )
    assert math.isnan(prior_shift.last_window_mean({}, "pseudo/kl_to_gt", 250))


def test_summary_writes_its_docs_section(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs / "digits" / "act_labeled_prior-s0", 0.5, [0.1, 0.2, 0.3])
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- prior-shift:begin -->\nold\n<!-- prior-shift:end -->\nafter\n")
    prior_shift.main(["summary", str(runs), "--seeds", "0", "--out", str(doc)])
    text = doc.read_text()
    assert text.startswith("before\n<!-- prior-shift:begin -->\n### Measured") and "old" not in text
    assert (
        f"Command: `python benchmarks/prior_shift.py summary {runs} --seeds 0 --out {doc}`" in text
    )
    assert "| digits | act_labeled_prior | 1 | 50.0 |" in text and text.endswith("end -->\nafter\n")


def test_summary_marks_unmeasured_cells(tmp_path: Path) -> None:
    """A fixed-threshold run has no ACT prior: its prior cells read – rather than nan."""
    directory = tmp_path / "digits" / "fixed_threshold-s0"
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"teacher": {"map": 0.4}}))
    (directory / "metrics.csv").write_text("step,pseudo/kl_to_gt\n1000,0.5\n")
    table = prior_shift.summary(tmp_path, [0], 250)
    assert "| digits | fixed_threshold | 1 | 40.0 | 0.500 | – | – | – | – | unknown |" in table
