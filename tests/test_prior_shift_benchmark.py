"""benchmarks/prior_shift.py, the estimator's cheap check: a trained teacher's estimate on an
experiment's unlabeled images, next to the labeled and the true prior. (The training runs of
issue #17 are comparisons of benchmarks/quality.py: tests/test_benchmarks_quality.py.)"""

from pathlib import Path

import prior_shift
import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config


def test_estimate_reports_each_prior_against_the_truth(smoke_run: Path, capsys) -> None:
    prior_shift.main([str(smoke_run / "checkpoints/last.ckpt"), "--experiments", "smoke"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| experiment | images | TV labeled | TV estimate |")
    assert len(lines) == 3 and lines[2].startswith("| smoke | 48 | ")  # every unlabeled image
    cells = [float(c) for c in lines[2].strip("| ").split(" | ")[2:]]
    tv, boxes = cells[:3], cells[3:]
    assert all(0.0 <= v <= 1.0 for v in tv) and all(b > 0 for b in boxes)
    # The labeled and the true prior's columns are the smoke splits' own, counted here again.
    datamodule = instantiate(compose_config(["experiment=smoke", "data.num_workers=0"]).data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    labeled, truth = datamodule.labeled_class_prior, datamodule.unlabeled_class_prior
    assert tv[0] == pytest.approx(labeled.total_variation(truth), abs=5e-4) and tv[0] > 0
    assert boxes[0] == pytest.approx(labeled.boxes_per_image, abs=5e-3)
    assert boxes[3] == pytest.approx(truth.boxes_per_image, abs=5e-3)
