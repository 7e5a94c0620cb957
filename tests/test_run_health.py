"""RunHealth (the three symptoms of a run that does not learn from its unlabeled images) and the
training progress bar, on constructed step outputs and validation results."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from tqdm.auto import tqdm

from labelmatch.callbacks.run_health import RunHealth
from labelmatch.data.class_prior import ClassPrior
from labelmatch.method.pseudo_labels import PseudoLabelBatch, PseudoLabels
from labelmatch.progress import PhaseProgressBar

PRIOR = {"class_ratios": [0.5, 0.5], "boxes_per_image": 2.0}  # limit: 3 x 2.0 = 6 per image


def step_output(boxes_per_image: list[int]) -> dict:
    """A semi-supervised step's output: per image, that many reliable boxes of class 1."""
    pseudo = [
        PseudoLabels(
            torch.zeros(n, 4),
            torch.ones(n, dtype=torch.long),
            torch.zeros(0, 4),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0),
        )  # fmt: skip
        for n in boxes_per_image
    ]
    batch = PseudoLabelBatch(
        strong_images=[], pseudo_strong=pseudo, pseudo_weak=pseudo,
        gt_weak_boxes=[], gt_weak_labels=[], num_mined=0,
    )  # fmt: skip
    return {"loss": torch.tensor(1.0), "pseudo": batch}


def health(window: int = 3) -> RunHealth:
    callback = RunHealth(window=window, prior=PRIOR)
    # The prior is given: the datamodule's labeled set is never read.
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(labeled_dataset=None, labeled_class_prior=None)
    )
    callback.setup(trainer, SimpleNamespace(eval_metrics={}, burn_in_metrics=None), "fit")
    return callback


def run_steps(callback: RunHealth, outputs: list[dict | None], first_step: int = 1) -> None:
    for offset, output in enumerate(outputs):
        trainer = SimpleNamespace(global_step=first_step + offset)
        callback.on_train_batch_end(trainer, None, output, None, 0)


def test_a_window_without_pseudo_labels_is_reported_once(caplog):
    callback = health(window=3)
    with caplog.at_level(logging.WARNING, logger="labelmatch.callbacks.run_health"):
        run_steps(callback, [step_output([0, 0])] * 2)
        assert callback.counts["no_pseudo_labels"] == 0  # the window is not over yet
        run_steps(callback, [step_output([0, 0])], first_step=3)
    assert callback.counts == {
        "no_pseudo_labels": 1,
        "too_many_pseudo_labels": 0,
        "teacher_below_burn_in": 0,
    }
    assert "no pseudo labels in the 3 steps up to step 3" in caplog.text
    assert "Troubleshooting: no_pseudo_labels" in caplog.text


def test_one_pseudo_box_in_a_window_is_not_a_missing_one():
    callback = health(window=3)
    run_steps(callback, [step_output([0, 0]), step_output([0, 1]), step_output([0, 0])])
    assert sum(callback.counts.values()) == 0


def test_more_than_three_times_the_prior_per_image_is_reported(caplog):
    callback = health(window=2)
    # 7 boxes per image on average: above 3 x 2.0 ...
    with caplog.at_level(logging.WARNING, logger="labelmatch.callbacks.run_health"):
        run_steps(callback, [step_output([8, 6]), step_output([7, 7])])
    assert callback.counts["too_many_pseudo_labels"] == 1
    assert "7.0 pseudo boxes per image in the 2 steps up to step 2" in caplog.text
    # ... 6 per image is exactly the limit, not above it.
    run_steps(callback, [step_output([6, 6]), step_output([5, 7])], first_step=3)
    assert callback.counts["too_many_pseudo_labels"] == 1


def test_the_limit_follows_the_boxes_per_image_an_act_refresh_aimed_at(caplog):
    """With `method.act.prior=estimated` on unlabeled images that hold more objects, the
    thresholds aim at more boxes than the labeled prior's: that is the estimate working, not
    the symptom. The limit is 3 x what the step's thresholds aim at (here 3.0, so 9.0)."""
    callback = health(window=2)
    aimed = ClassPrior(torch.tensor([0.5, 0.5], dtype=torch.float64), 3.0)
    refreshed = [step_output([8, 6]), step_output([7, 7])]
    for output in refreshed:
        output["pseudo"].threshold_prior = aimed
    run_steps(callback, refreshed)
    assert callback.counts["too_many_pseudo_labels"] == 0  # 7.0 per image is below 9.0
    refreshed = [step_output([10, 10]), step_output([10, 10])]
    for output in refreshed:
        output["pseudo"].threshold_prior = aimed
    with caplog.at_level(logging.WARNING, logger="labelmatch.callbacks.run_health"):
        run_steps(callback, refreshed, first_step=3)
    assert callback.counts["too_many_pseudo_labels"] == 1
    assert "10.0 pseudo boxes per image in the 2 steps up to step 4, above 3 x the 3.00" in (
        caplog.text
    )


def test_burn_in_steps_do_not_count_towards_a_window():
    callback = health(window=2)
    run_steps(callback, [None, {"loss": torch.tensor(1.0)}, step_output([0])])
    assert callback.window_steps == 1 and sum(callback.counts.values()) == 0


def test_teacher_below_the_burn_in_model_is_reported():
    callback = health()
    trainer = SimpleNamespace(sanity_checking=False, global_step=500)
    module = SimpleNamespace(burn_in_metrics={"map": 0.40}, eval_metrics={"teacher": {"map": 0.41}})
    callback.on_validation_end(trainer, module)
    assert callback.counts["teacher_below_burn_in"] == 0
    module.eval_metrics["teacher"]["map"] = 0.39
    callback.on_validation_end(trainer, module)
    assert callback.counts["teacher_below_burn_in"] == 1
    # The validation a run adds after training (trainer.validate) is not a training-loop one:
    # a resumed run would count it twice.
    after_training = SimpleNamespace(sanity_checking=False, global_step=500,
                                     state=SimpleNamespace(fn="validate"))  # fmt: skip
    callback.on_validation_end(after_training, module)
    assert callback.counts["teacher_below_burn_in"] == 1
    # No burn-in model yet (still in burn-in): nothing to compare with.
    callback.on_validation_end(trainer, SimpleNamespace(burn_in_metrics=None, eval_metrics={}))
    assert callback.counts["teacher_below_burn_in"] == 1


def test_counts_and_the_open_window_survive_a_checkpoint():
    callback = health(window=3)
    run_steps(callback, [step_output([0])] * 3 + [step_output([1, 2])])
    restored = health(window=3)
    restored.load_state_dict(callback.state_dict())
    assert restored.counts == callback.counts
    assert (restored.window_boxes, restored.window_images, restored.window_steps) == (3, 2, 1)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="window >= 1"):
        RunHealth(window=0)


def test_the_progress_bar_names_the_phase_and_shows_pseudo_boxes_and_teacher_map():
    bar = PhaseProgressBar()
    bar._train_progress_bar = tqdm(total=60, disable=True)
    trainer = SimpleNamespace(callback_metrics={"train/loss": torch.tensor(1.23456)})
    supervised = SimpleNamespace(in_semi_supervised_phase=False, semi_supervised=False)
    bar.on_train_batch_end(trainer, supervised, {"loss": torch.tensor(1.2)}, None, 0)
    assert bar.train_progress_bar.desc.startswith("supervised step")
    module = SimpleNamespace(in_semi_supervised_phase=False, semi_supervised=True, eval_metrics={})
    bar.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.2)}, None, 0)
    assert bar.train_progress_bar.desc.startswith("burn-in step")
    assert bar.get_metrics(trainer, module) == {"loss": "1.235"}

    module.in_semi_supervised_phase = True
    module.eval_metrics = {"student": {"map": 0.1}, "teacher": {"map": 0.4567}}
    bar.on_train_batch_end(trainer, module, step_output([1, 2]), None, 1)
    assert bar.train_progress_bar.desc.startswith("semi-supervised step")
    assert bar.get_metrics(trainer, module) == {
        "loss": "1.235",
        "pseudo/img": "1.50",
        "teacher mAP": "45.7",
    }
