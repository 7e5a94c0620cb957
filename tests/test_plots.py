"""Reading a run's logged history for the plots, and the plots' class order."""

from __future__ import annotations

import math

from labelmatch.callbacks.pseudo_statistics import PseudoLabelStatistics
from labelmatch.plots import _head_to_tail, read_run_metrics


def test_a_resumed_run_s_history_keeps_each_step_once_from_the_latest_file(tmp_path) -> None:
    """A run stopped after its last checkpoint (step 999) had logged steps 1249 and 1499; the
    resumed run trains and logs them again. Joined as they were until 2026-12-06, every
    trajectory went back in time at the join: steps 999, 1249, 1499, 1249, 1499, 1749."""
    (tmp_path / "metrics.1.csv").write_text(
        "step,act/reliable/a,lr\n999,0.5,\n1249,0.6,\n1499,0.7,\n1499,,0.01\n"
    )
    (tmp_path / "metrics.csv").write_text("step,act/reliable/a\n1249,0.62\n1499,0.71\n1749,0.8\n")
    metrics = read_run_metrics(tmp_path)
    assert metrics["act/reliable/a"] == ([999, 1249, 1499, 1749], [0.5, 0.62, 0.71, 0.8])
    assert "lr" not in metrics  # logged only at a step the resumed run logged again


def test_classes_without_a_share_come_last_in_their_order() -> None:
    assert _head_to_tail([math.nan, 0.0, 0.5, math.nan, 0.2]) == [2, 4, 1, 0, 3]


def test_drawing_no_pseudo_labels_per_update_draws_nothing() -> None:
    """`images_per_update=0`, the way to turn the drawings off, stopped the first threshold
    update in matplotlib ("Number of columns must be a positive integer, not 0")."""
    statistics = PseudoLabelStatistics(images_per_update=0)
    assert statistics.draw(trainer=None, pl_module=None, pseudo_batch=None) is None
