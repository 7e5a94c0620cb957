"""benchmarks/prior_shift.py, the estimator's cheap check: a trained teacher's estimate on an
experiment's unlabeled images, next to the labeled and the true prior. (The training runs of
issue #17 are comparisons of benchmarks/quality.py: tests/test_benchmarks_quality.py.)"""

import importlib.util
from pathlib import Path

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("prior_shift", REPO / "benchmarks/prior_shift.py")
prior_shift = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prior_shift)


def test_estimate_reports_each_prior_against_the_truth(smoke_run: Path, capsys) -> None:
    prior_shift.main([str(smoke_run / "checkpoints/last.ckpt"), "--experiments", "smoke"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| experiment | images | TV labeled | TV estimate |")
    assert len(lines) == 3 and lines[2].startswith("| smoke | 48 | ")  # every unlabeled image
    cells = [float(c) for c in lines[2].strip("| ").split(" | ")[2:]]
    tv, boxes = cells[:3], cells[3:]
    assert all(0.0 <= v <= 1.0 for v in tv) and all(b > 0 for b in boxes)
    # The labeled prior's TV is the smoke splits' own sampling difference: not zero.
    assert tv[0] > 0.0
