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


def test_estimated_prior_is_logged_used_and_drawn(tmp_path: Path, cache_dir: Path) -> None:
    # LABELMATCH_KEEP_RUN=DIR keeps the run for a look at its metrics and plots.
    tmp_path = Path(os.environ.get("LABELMATCH_KEEP_RUN", tmp_path))
    run = train_cli(
        tmp_path / "run",
        cache_dir,
        "experiment=smoke",
        "method.act.prior=estimated",
        # The smoke teacher (40 burn-in steps) scores below the default floor of 0.3 everywhere,
        # which keeps the labeled prior (tests/test_method_act_estimated.py): estimate from all.
        "method.act.estimator.min_score=0",
        "data.splits.unlabeled_class_prior=reversed",
    )
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
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
