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


def test_targets() -> None:
    maps = {"act_labeled_prior": 50.0, "act_estimated_prior": 53.0, "act_oracle_prior": 56.0}
    assert prior_shift.check_targets(True, maps) == (True, "closes 50 % of a 6.00 mAP gap")
    assert not prior_shift.check_targets(True, {**maps, "act_estimated_prior": 52.9})[0]
    assert prior_shift.check_targets(False, {**maps, "act_estimated_prior": 49.5})[0]
    assert not prior_shift.check_targets(False, {**maps, "act_estimated_prior": 49.4})[0]


def _fake_run(directory: Path, teacher_map: float, kl: list[float]) -> None:
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"teacher": {"map": teacher_map}}))
    rows = ["step,pseudo/kl_to_gt,pseudo/boxes_per_image,pseudo/gt_per_image"]
    rows += [f"{step},{k},3.0,4.0" for step, k in zip((500, 800, 1000), kl)]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_summary_reads_finished_runs(tmp_path: Path) -> None:
    for name, teacher_map in [
        ("act_labeled_prior", 0.50),
        ("act_estimated_prior", 0.54),
        ("act_oracle_prior", 0.56),
    ]:
        _fake_run(tmp_path / "digits_shift" / f"{name}-s0", teacher_map, [0.9, 0.2, 0.4])
    measured = prior_shift.measure(tmp_path / "digits_shift" / "act_labeled_prior-s0", 250)
    assert measured["kl_to_gt"] == pytest.approx(0.3)  # steps 800 and 1000: within 250 of 1000
    assert measured["teacher_map"] == pytest.approx(50.0)
    table = prior_shift.summary(tmp_path, [0, 1], 250)
    assert "| digits_shift | act_estimated_prior | 1 | 54.0 | 0.300 | 3.00 | 4.00 |" in table
    assert "- digits_shift: PASS, the estimate closes 67 % of a 6.00 mAP gap" in table
    assert math.isnan(prior_shift.last_window_mean({}, "pseudo/kl_to_gt", 250))
