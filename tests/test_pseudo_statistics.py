"""Pseudo-label statistics logged in training, on a constructed case computed by hand, and the
small pieces of the observation tooling that need no training (loggers, detector choice)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.callbacks.pseudo_statistics import PseudoLabelStatistics, threshold_updates
from labelmatch.checkpoints import pick_detector
from labelmatch.data.class_prior import ClassPrior, class_prior_from_counts
from labelmatch.loggers import resolve_wandb_mode
from labelmatch.method.module import LabelMatchModule
from labelmatch.method.pseudo_labels import PseudoLabelBatch, PseudoLabels, count_by_thresholds
from labelmatch.models.faster_rcnn import build_frcnn_tiny

NAMES = ["a", "b", "c"]
PRIOR = {"class_ratios": [0.6, 0.3, 0.1], "boxes_per_image": 2.5}


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def labels(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def pseudo(reliable, reliable_labels, uncertain, uncertain_labels) -> PseudoLabels:
    return PseudoLabels(
        reliable, reliable_labels, uncertain, uncertain_labels, torch.full((len(uncertain),), 0.5)
    )


def image_one() -> tuple[PseudoLabels, torch.Tensor, torch.Tensor]:
    """GT: a at [0,0,10,10], b at [20,20,30,30]. Reliable: a on the a box (TP), a on the b box
    (wrong class, FP). Uncertain: b at IoU 81/100 with the b box (TP), c where nothing is (FP)."""
    labels_ = pseudo(
        boxes([0, 0, 10, 10], [20, 20, 30, 30]), labels(1, 1),
        boxes([21, 21, 30, 30], [50, 50, 60, 60]), labels(2, 3),
    )  # fmt: skip
    return labels_, boxes([0, 0, 10, 10], [20, 20, 30, 30]), labels(1, 2)


def image_two() -> tuple[PseudoLabels, torch.Tensor, torch.Tensor]:
    """GT: a at [0,0,10,10], c at [40,40,50,50]. Reliable: a on the a box (TP), then a duplicate
    of it (IoU 0.81, but the box is taken: FP). No uncertain box."""
    labels_ = pseudo(boxes([0, 0, 10, 10], [1, 1, 10, 10]), labels(1, 1), boxes(), labels())
    return labels_, boxes([0, 0, 10, 10], [40, 40, 50, 50]), labels(1, 3)


def step_batch(image, num_mined: int) -> PseudoLabelBatch:
    pseudo_labels, gt_boxes, gt_labels = image
    return PseudoLabelBatch(
        strong_images=[torch.zeros(3, 64, 64)],
        pseudo_strong=[pseudo_labels],
        pseudo_weak=[pseudo_labels],
        gt_weak_boxes=[gt_boxes],
        gt_weak_labels=[gt_labels],
        num_mined=num_mined,
    )


def module_double(**members) -> SimpleNamespace:
    """A stand-in with every member the callbacks require of the module
    (`labelmatch.callbacks.requirements`), the fixed-threshold teacher already labelling."""
    base = dict(
        hparams=SimpleNamespace(class_names=NAMES), global_step=0, burn_in_steps=0,
        log_event=lambda metrics, step=None: None, teacher=None,
        teacher_ready=torch.tensor(True), in_semi_supervised_phase=True,
        reliable_thresholds=torch.zeros(3), uncertain_thresholds=torch.zeros(3),
        threshold_version=torch.tensor(0), threshold_refreshes=torch.tensor(0),
        threshold_prior=None,
        set_thresholds=lambda reliable, uncertain, prior=None: None,
    )  # fmt: skip
    return SimpleNamespace(**{**base, **members})


def run_step(callback: PseudoLabelStatistics, batch: PseudoLabelBatch, step: int) -> dict:
    """One on_train_batch_end as Lightning calls it (single process, no ACT callback: the
    fixed-threshold teacher counts as one threshold update)."""
    logged: dict[str, float] = {}
    trainer = SimpleNamespace(
        callbacks=[], global_step=step, log_every_n_steps=10, world_size=1, is_global_zero=False
    )
    module = module_double(log_event=logged.update, global_step=step)
    outputs = {"loss": torch.tensor(1.0), "pseudo": batch}  # the module's training_step output
    callback.on_train_batch_end(trainer, module, outputs, None, 0)
    return logged


def statistics_callback(unlabeled_counts=(2, 1, 1)) -> PseudoLabelStatistics:
    callback = PseudoLabelStatistics(prior=PRIOR)
    datamodule = SimpleNamespace(
        labeled_dataset=None,
        labeled_class_prior=PRIOR,
        unlabeled_dataset=SimpleNamespace(class_counts=unlabeled_counts),
    )
    callback.setup(SimpleNamespace(datamodule=datamodule), module_double(), "fit")
    callback.updates_seen = 1  # the teacher already labels: no update at these steps
    return callback


def test_logged_statistics_equal_hand_computed_values_across_a_resume() -> None:
    callback = statistics_callback()
    assert run_step(callback, step_batch(image_one(), num_mined=1), step=9) == {}  # not a log step
    resumed = statistics_callback()
    resumed.load_state_dict(callback.state_dict())
    logged = run_step(resumed, step_batch(image_two(), num_mined=0), step=10)

    # 2 images; reliable a,a | a,a; uncertain b,c; 3 of the 6 pseudo boxes and of the 4 GT match.
    assert logged["pseudo/reliable_per_image"] == 2.0
    assert logged["pseudo/uncertain_per_image"] == 1.0
    assert logged["pseudo/mined_per_image"] == 0.5
    assert logged["pseudo/boxes_per_image"] == 3.0
    assert logged["pseudo/gt_per_image"] == 2.0
    assert logged["pseudo/prior_per_image"] == 2.5
    assert logged["pseudo/precision"] == 0.5
    assert logged["pseudo/reliable_precision"] == 0.5
    assert logged["pseudo/recall"] == 0.75
    assert [logged[f"pseudo/precision/{c}"] for c in NAMES] == [0.5, 1.0, 0.0]
    assert [logged[f"pseudo/recall/{c}"] for c in NAMES] == [1.0, 1.0, 0.0]
    share = [4 / 6, 1 / 6, 1 / 6]
    assert [logged[f"pseudo/share/{c}"] for c in NAMES] == pytest.approx(share)
    assert [logged[f"pseudo/gt_share/{c}"] for c in NAMES] == pytest.approx([0.5, 0.25, 0.25])
    assert [logged[f"pseudo/prior_share/{c}"] for c in NAMES] == pytest.approx([0.6, 0.3, 0.1])
    kl_prior = sum(p * math.log(p / q) for p, q in zip(share, [0.6, 0.3, 0.1]))
    kl_gt = sum(p * math.log(p / q) for p, q in zip(share, [0.5, 0.25, 0.25]))
    assert logged["pseudo/kl_to_prior"] == pytest.approx(kl_prior)
    assert logged["pseudo/kl_to_gt"] == pytest.approx(kl_gt)
    # The log empties the window: the next log step without new batches reports nothing.
    assert run_step(resumed, None, step=20) == {}


def test_a_checkpoint_holds_every_ranks_window_and_rank_zero_resumes_it(monkeypatch) -> None:
    """Two processes, one image each: the checkpoint holds the sum of both windows (rank 0
    writes the file); on resume rank 0 takes it back and rank 1 starts empty, so the windows'
    sum, which the log reports, is the saved one (before, every rank took rank 0's window)."""
    from labelmatch.callbacks import pseudo_statistics

    rank_zero, rank_one = statistics_callback(), statistics_callback()
    rank_zero.add(step_batch(image_one(), num_mined=1))
    rank_one.add(step_batch(image_two(), num_mined=0))
    windows = [rank_zero.quality.counts(), rank_one.quality.counts()]
    monkeypatch.setattr(pseudo_statistics, "gather_saved", lambda value: windows)
    saved = rank_zero.state_dict()

    resumed = {}
    for rank in (0, 1):
        ranks = (rank, 2)
        monkeypatch.setattr(pseudo_statistics, "distributed_rank_and_world_size", lambda r=ranks: r)
        resumed[rank] = statistics_callback()
        resumed[rank].load_state_dict(saved)
    # Rank 1 restores an empty window, but as an update: both ranks join compute's collective.
    assert resumed[1].quality.update_called and resumed[0].quality.update_called
    assert not any(bool(v.any()) for v in resumed[1].quality.counts().values())
    logged = run_step(resumed[0], None, step=10)  # one process holds the whole window now
    assert logged["pseudo/reliable_per_image"] == 2.0 and logged["pseudo/mined_per_image"] == 0.5
    assert logged["pseudo/precision"] == 0.5 and logged["pseudo/recall"] == 0.75


def test_a_checkpoint_of_the_former_window_format_resumes_to_the_same_numbers() -> None:
    """Checkpoints written before the statistics were a torchmetrics Metric kept the window's
    pseudo labels themselves ("pending"); a resume counts them as the window's first step."""
    pseudo_labels, gt_boxes, gt_labels = image_one()
    fields = ("reliable_boxes", "reliable_labels", "uncertain_boxes", "uncertain_labels")
    fields += ("uncertain_scores",)
    former = {
        "pending": [({f: getattr(pseudo_labels, f) for f in fields}, gt_boxes, gt_labels)],
        "pending_mined": 1,
        "updates_seen": 1,
    }
    resumed = statistics_callback()
    resumed.load_state_dict(former)
    logged = run_step(resumed, step_batch(image_two(), num_mined=0), step=10)
    uninterrupted = statistics_callback()
    run_step(uninterrupted, step_batch(image_one(), num_mined=1), step=9)
    assert logged == run_step(uninterrupted, step_batch(image_two(), num_mined=0), step=10)
    assert logged["pseudo/precision"] == 0.5


def test_a_refresh_logs_the_previous_thresholds_window_and_opens_one_for_the_new() -> None:
    """The step's `PseudoLabelBatch` says which thresholds split it. At a new ACT refresh
    (off the log steps) the window of the previous thresholds is logged against the prior they
    aimed at, without the refresh step's own pseudo labels; those open the next window, which
    compares with the prior the refresh aimed at (for example an estimate). Until 2026-12-04
    the refresh step's labels joined the old window, compared with the new prior."""
    callback = statistics_callback()
    assert run_step(callback, step_batch(image_one(), num_mined=0), step=3) == {}
    aimed = ClassPrior(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), 4.0)
    batch = step_batch(image_two(), num_mined=0)
    refreshed = dataclasses.replace(batch, threshold_refreshes=2, threshold_prior=aimed)
    logged = run_step(callback, refreshed, step=4)
    share = [2 / 4, 1 / 4, 1 / 4]  # image one alone: reliable a, a; uncertain b, c
    assert logged["pseudo/boxes_per_image"] == 4.0 and logged["pseudo/prior_per_image"] == 2.5
    assert [logged[f"pseudo/prior_share/{c}"] for c in NAMES] == pytest.approx([0.6, 0.3, 0.1])
    kl_prior = sum(p * math.log(p / q) for p, q in zip(share, [0.6, 0.3, 0.1]))
    assert logged["pseudo/kl_to_prior"] == pytest.approx(kl_prior)
    assert callback.updates_seen == 2
    assert run_step(callback, refreshed, step=5) == {}  # the same thresholds: no new update
    logged = run_step(callback, None, step=10)  # image two twice, all of class a
    assert logged["pseudo/boxes_per_image"] == 2.0 and logged["pseudo/prior_per_image"] == 4.0
    assert [logged[f"pseudo/prior_share/{c}"] for c in NAMES] == pytest.approx([0.2, 0.3, 0.5])
    assert logged["pseudo/kl_to_prior"] == pytest.approx(math.log(1 / 0.2))


def test_a_window_is_logged_at_the_step_of_the_batch_it_ends_with() -> None:
    """`global_step` counts the batch's optimiser step by on_train_batch_end; the row goes to
    the batch's own step, where Lightning's `self.log` rows and ACT's refresh rows are."""
    callback = statistics_callback()
    steps = []
    trainer = SimpleNamespace(
        callbacks=[], global_step=10, log_every_n_steps=10, world_size=1, is_global_zero=False
    )
    module = module_double(log_event=lambda metrics, step=None: steps.append(step))
    batch = step_batch(image_one(), num_mined=0)
    callback.on_train_batch_end(trainer, module, {"pseudo": batch}, None, 9)
    assert steps == [9]


def test_the_first_thresholds_log_nothing_for_the_empty_window_before_them() -> None:
    callback = statistics_callback()
    callback.updates_seen = 0  # burn-in: nothing labelled yet
    assert run_step(callback, step_batch(image_one(), num_mined=0), step=4) == {}
    assert callback.updates_seen == 1 and callback.quality.update_called


def test_threshold_updates_count_refreshes_or_the_fixed_thresholds_once() -> None:
    batch = step_batch(image_one(), num_mined=0)
    assert threshold_updates(None, seen=4) == 4  # burn-in: no pseudo labels, nothing changes
    assert threshold_updates({"loss": torch.tensor(1.0)}, seen=0) == 0
    assert threshold_updates({"pseudo": batch}, seen=0) == 1  # fixed thresholds
    refreshed = dataclasses.replace(batch, threshold_refreshes=3)
    assert threshold_updates({"pseudo": refreshed}, seen=1) == 3


def test_without_unlabeled_annotations_only_the_prior_side_is_logged() -> None:
    callback = statistics_callback(unlabeled_counts=(0, 0, 0))
    logged = run_step(callback, step_batch(image_one(), num_mined=0), step=10)
    assert logged["pseudo/boxes_per_image"] == 4.0
    assert "pseudo/kl_to_prior" in logged
    for name in ("precision", "recall", "gt_per_image", "kl_to_gt", "gt_share/a"):
        assert f"pseudo/{name}" not in logged


def test_count_by_thresholds_splits_as_training_does() -> None:
    scores = torch.tensor([0.9, 0.5, 0.2, 0.6, 0.05])
    classes = labels(1, 1, 1, 2, 2)
    reliable, uncertain = torch.tensor([0.8, 0.7]), torch.tensor([0.3, 0.1])
    assert count_by_thresholds(classes, scores, reliable, uncertain) == (1, 2)


def test_wandb_mode_auto_is_offline_without_an_api_key(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        resolve_wandb_mode("cloud")


def test_a_checkpoint_without_trained_teacher_predicts_with_its_student() -> None:
    module = LabelMatchModule(
        build_frcnn_tiny(3), method={"name": "supervised"}, optim={}, class_names=NAMES,
        category_ids=[1, 2, 3], val_json="unused.json",
    )  # fmt: skip
    assert pick_detector(module, "teacher") is module.student
    assert pick_detector(module, "student") is module.student


def test_both_callbacks_compare_with_the_datamodules_one_labeled_prior() -> None:
    labeled_prior = class_prior_from_counts([6, 3, 3], num_images=2)
    datamodule = SimpleNamespace(
        labeled_class_prior=labeled_prior,
        unlabeled_class_prior=None,
        labeled_dataset=None,
        unlabeled_dataset=SimpleNamespace(class_counts=[0, 0, 0]),
        reference_dataloader=lambda num_images, step, labeled=False: [],
    )
    statistics = PseudoLabelStatistics()
    statistics.setup(SimpleNamespace(datamodule=datamodule), module_double(), "fit")
    act = ACTRefresh()
    act.setup(SimpleNamespace(datamodule=datamodule), module_double(), "fit")
    # Computed once (`DetectionDataModule.labeled_class_prior`), not once per callback.
    assert statistics.prior is labeled_prior and act.prior is labeled_prior


def test_a_resumed_window_survives_setup_again_and_keeps_the_prior_it_aimed_at() -> None:
    """Lightning calls setup again for the run's closing validation, before the final save:
    the window was rebuilt empty there, so the end-of-run checkpoint lost it. On resume the
    window compares with the prior the module's restored thresholds aimed at, not the
    configured one (until the first step's batch said so)."""
    callback = statistics_callback()
    callback.add(step_batch(image_one(), num_mined=0))
    datamodule = SimpleNamespace(
        labeled_dataset=None,
        labeled_class_prior=PRIOR,
        unlabeled_dataset=SimpleNamespace(class_counts=(2, 1, 1)),
    )
    callback.setup(SimpleNamespace(datamodule=datamodule), module_double(), "validate")
    assert callback.quality.counts()["num_images"].item() == 1

    aimed = ClassPrior(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), 4.0)
    resumed = statistics_callback()
    resumed.load_state_dict(callback.state_dict())
    resumed.on_train_start(None, module_double(threshold_prior=aimed))
    logged = run_step(resumed, None, step=10)
    assert logged["pseudo/prior_per_image"] == 4.0
