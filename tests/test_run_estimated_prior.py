"""Wiring of method.act.prior=estimated: a smoke run on digits whose unlabeled canvases follow
the reversed class prior logs ACT's estimate at each refresh, compares the pseudo labels with
it, and draws it next to the labeled prior and the unlabeled ground truth."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.conftest import train_cli

DIGITS = [str(d) for d in range(10)]


def estimated_run(run_dir: Path, cache_dir: Path, *overrides: str) -> list[dict[str, str]]:
    """A smoke run with the estimated prior, its metrics.csv rows. The smoke teacher (40
    burn-in steps) scores below the default floor of 0.3 everywhere, which keeps the labeled
    prior (tests/test_method_act_estimated.py): it estimates from all scores."""
    train_cli(
        run_dir,
        cache_dir,
        "experiment=smoke",
        "method.act.prior=estimated",
        "method.act.estimator.min_score=0",
        *overrides,
    )
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def test_estimated_prior_is_logged_used_and_drawn(tmp_path: Path, cache_dir: Path) -> None:
    # LABELMATCH_KEEP_RUN=DIR keeps the run for a look at its metrics and plots.
    tmp_path = Path(os.environ.get("LABELMATCH_KEEP_RUN", tmp_path))
    # Without the shift test (on by default) ACT aims at every estimate.
    rows = estimated_run(
        tmp_path / "run",
        cache_dir,
        "data.splits.unlabeled_class_prior=reversed",
        "method.act.estimator.shift_test_level=null",
    )
    run = tmp_path / "run"
    refreshes = [row for row in rows if row.get("act/prior/boxes_per_image")]
    assert [int(row["step"]) for row in refreshes] == [40, 48, 56]  # burn-in 40, interval 8
    for row in refreshes:
        shares = [float(row[f"act/prior/{d}"]) for d in DIGITS]
        assert sum(shares) == pytest.approx(1.0, abs=1e-6) and min(shares) > 0
        assert float(row["act/prior/boxes_per_image"]) > 0
        labeled = [float(row[f"act/labeled_prior/{d}"]) for d in DIGITS]
        assert shares != pytest.approx(labeled)  # an estimate, not the labeled prior again
        # The oracle, logged for comparison: digit 9 (category 10) leads the reversed pool.
        truth = [float(row[f"act/unlabeled_prior/{d}"]) for d in DIGITS]
        assert truth[9] == max(truth) and truth[0] == min(truth)
    # The statistics compare the pseudo labels with the prior ACT used (the latest estimate).
    latest = {}
    for row in rows:
        if row.get("act/prior/boxes_per_image"):
            latest = row
        if row.get("pseudo/prior_per_image") and latest:
            assert float(row["pseudo/prior_per_image"]) == pytest.approx(
                float(latest["act/prior/boxes_per_image"])
            )
            assert float(row["pseudo/prior_share/9"]) == pytest.approx(float(latest["act/prior/9"]))
    assert (run / "plots" / "class_prior.png").is_file()


def test_a_calibration_split_is_what_the_estimate_calibrates_on(
    tmp_path: Path, cache_dir: Path
) -> None:
    """With data.splits.num_calibration the calibration pass reads the calibration split's 8
    canvases (not min(subset 32, 16 labeled images)), and the data report shows the split."""
    run = tmp_path / "run"
    rows = estimated_run(run, cache_dir, "data.splits.num_calibration=8")
    counts = [
        float(row["act/calibration_images"]) for row in rows if row.get("act/calibration_images")
    ]
    assert counts == [8.0, 8.0, 8.0]  # the refreshes at steps 40, 48, 56
    estimates = [row for row in rows if row.get("act/prior/boxes_per_image")]
    assert len(estimates) == 3
    # The data report's row: the calibration split's 8 images, from their own folder.
    rows = [line.split() for line in (run / "run.log").read_text().splitlines()]
    report = [row for row in rows if row and row[0] == "calibration"]
    labeled = [row for row in rows if row and row[0] == "labeled"]
    assert len(report) == 1 and report[0][1] == "8" and report[0][-1].endswith("labeled.json")
    assert report[0][-1] != labeled[0][-1]  # another generated dataset's labeled canvases


def test_the_shift_test_decides_at_each_refresh_what_act_aims_at(
    tmp_path: Path, cache_dir: Path
) -> None:
    """method.act.estimator.shift_test_level (0.05 by default): every refresh logs the estimate
    and the test, and ACT aims at the estimate where a shift is detected, else at the labeled
    prior."""
    rows = estimated_run(tmp_path / "run", cache_dir, "data.splits.unlabeled_class_prior=reversed")
    by_step: dict[int, dict[str, str]] = {}  # a refresh's events may land on separate rows
    for row in rows:
        by_step.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v})
    refreshes = [row for row in by_step.values() if row.get("act/shift_test/statistic")]
    assert [int(row["step"]) for row in refreshes] == [40, 48, 56]
    for row in refreshes:
        assert float(row["act/shift_test/critical"]) == pytest.approx(2.807, abs=1e-3)  # C = 10
        detected = float(row["act/shift_test/detected"])
        assert detected == float(
            float(row["act/shift_test/statistic"]) > float(row["act/shift_test/critical"])
        )
        aimed = [float(row[f"act/prior/{d}"]) for d in DIGITS]
        kind = "estimated_prior" if detected else "labeled_prior"
        assert aimed == pytest.approx([float(row[f"act/{kind}/{d}"]) for d in DIGITS])
