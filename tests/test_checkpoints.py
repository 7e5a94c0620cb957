"""Checkpoint files: atomic writes, class checks, random states; the ACT subset under DDP."""

import os
import random
import stat
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from labelmatch.callbacks.best_checkpoint import BestCheckpoint
from labelmatch.callbacks.random_states import capture_random_states, restore_random_states
from labelmatch.checkpoints import atomic_torch_save, check_checkpoint_classes, load_module
from labelmatch.data import datamodule as datamodule_module
from labelmatch.data.errors import DataError
from labelmatch.errors import ConfigError

NAMES, IDS = ["cat", "dog"], [3, 7]


def test_atomic_save_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    atomic_torch_save({"step": 2}, path)
    assert torch.load(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"step": 3, "bad": Unpicklable()}, path)
    assert torch.load(path)["step"] == 2  # the previous checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_atomic_save_gives_the_file_the_mode_a_plain_save_would(tmp_path):
    """0666 less the umask, as torch.save's open(): a shared run folder's group can read the
    checkpoint (mkstemp's 0600 stayed with it through the rename until 2026-12-06)."""
    previous = os.umask(0o027)
    try:
        atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
        torch.save({"step": 1}, tmp_path / "plain.ckpt")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"last.ckpt": 0o640, "plain.ckpt": 0o640}


def test_checkpoint_of_this_project_must_have_the_same_classes(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"hyper_parameters": {"class_names": NAMES, "category_ids": IDS}}, path)
    check_checkpoint_classes(path, "ckpt_path", NAMES, IDS)  # same classes: fine
    with pytest.raises(DataError, match=r"ckpt_path: .*run\.ckpt was trained on 2 classes"):
        check_checkpoint_classes(path, "ckpt_path", ["cat", "bird"], IDS)
    with pytest.raises(DataError, match=r"\('dog', 7\)\], the data has 2: .*\('dog', 8\)"):
        check_checkpoint_classes(path, "ckpt_path", NAMES, [3, 8])


def test_plain_state_dict_is_checked_by_its_classifier_size(tmp_path):
    path = tmp_path / "detector.pth"
    torch.save({"roi_heads.box_predictor.cls_score.weight": torch.zeros(3, 4)}, path)
    check_checkpoint_classes(path, "method.init_from", NAMES, IDS)
    with pytest.raises(DataError, match=r"init_from: .*detector\.pth has a classifier for 2"):
        check_checkpoint_classes(path, "method.init_from", NAMES + ["bird"], IDS + [9])


def test_missing_or_unreadable_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path: no checkpoint at .*nowhere\.ckpt"):
        check_checkpoint_classes(tmp_path / "nowhere.ckpt", "ckpt_path", NAMES, IDS)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"broken\.ckpt is not a readable checkpoint"):
        check_checkpoint_classes(broken, "ckpt_path", NAMES, IDS)
    # A file torch.load reads that is no dict (a pickled list, a TorchScript export's module)
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(DataError, match=r"list\.ckpt is not a training checkpoint of this"):
        load_module(listed)


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(capture_random_states(), tmp_path / "states.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_random_states(torch.load(tmp_path / "states.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


def test_act_reference_subset_is_split_across_ranks_without_overlap(monkeypatch, tmp_path):
    from labelmatch.data.datamodule import DetectionDataModule
    from labelmatch.data.digits import DigitsSplits

    data = DetectionDataModule(
        DigitsSplits(tmp_path, num_labeled=4, num_unlabeled=10, num_val=2, image_size=48),
        num_workers=0, val_batch_size=2, train_scales=(48,), weak_scales=(48,),
        strong_scales=(48,), test_scale=48, max_size=64,
    )  # fmt: skip
    data.setup("fit")
    shares = []
    for rank in range(3):
        monkeypatch.setattr(
            datamodule_module, "distributed_rank_and_world_size", lambda rank=rank: (rank, 3)
        )
        loader = data.reference_dataloader(8, step=5)
        shares.append([t["image_id"] for batch in loader for t in batch["targets"]])
    monkeypatch.setattr(datamodule_module, "distributed_rank_and_world_size", lambda: (0, 1))
    single = [t["image_id"] for b in data.reference_dataloader(8, step=5) for t in b["targets"]]
    assert sorted(sum(shares, [])) == sorted(single)  # together: the single-process subset
    assert len(set(sum(shares, []))) == 8  # no image on two ranks


def test_the_best_checkpoints_step_and_metrics_survive_a_resume_in_the_same_folder(tmp_path):
    best = BestCheckpoint(tmp_path / "checkpoints", monitor="teacher/map")
    best.best_model_path = str(tmp_path / "checkpoints" / "best.ckpt")
    best.best_model_score = torch.tensor(0.5)
    best.best_step, best.best_metrics = 30, {"student": {"map": 0.4}, "teacher": {"map": 0.5}}
    state = best.state_dict()
    resumed = BestCheckpoint(tmp_path / "checkpoints", monitor="teacher/map")
    resumed.load_state_dict(state)
    assert float(resumed.best_model_score) == 0.5
    assert resumed.summary(tmp_path) == {
        "checkpoint": "checkpoints/best.ckpt", "step": 30, "monitor": "teacher/map",
        "student": {"map": 0.4}, "teacher": {"map": 0.5},
    }  # fmt: skip
    # Resumed into another folder, the old best (a file over there) is not this run's best.
    elsewhere = BestCheckpoint(tmp_path / "other", monitor="teacher/map")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        elsewhere.load_state_dict(state)
    assert elsewhere.summary(tmp_path) is None


def test_a_run_resumed_in_its_moved_folder_keeps_its_best(tmp_path):
    """`mv runs/a runs/archive/a`, then ckpt_path=auto: ModelCheckpoint compares absolute
    folders, so the moved run forgot its best and a worse validation overwrote best.ckpt
    (until 2026-12-06). Resumed from its own checkpoints/, the state is moved with it."""
    best = BestCheckpoint(tmp_path / "a" / "checkpoints", monitor="teacher/map")
    best.best_model_path = str(tmp_path / "a" / "checkpoints" / "best.ckpt")
    best.best_model_score = torch.tensor(0.6)
    best.best_step, best.best_metrics = 40, {"teacher": {"map": 0.6}}
    state = best.state_dict()
    moved = BestCheckpoint(tmp_path / "archive" / "a" / "checkpoints", monitor="teacher/map")
    trainer = SimpleNamespace(
        ckpt_path=str(tmp_path / "archive" / "a" / "checkpoints" / "last.ckpt")
    )
    moved.on_load_checkpoint(trainer, None, {})
    moved.load_state_dict(state)
    assert float(moved.best_model_score) == pytest.approx(0.6)
    assert moved.summary(tmp_path / "archive" / "a")["checkpoint"] == "checkpoints/best.ckpt"
    # Started from another run's checkpoint, a new run does not take that run's best.
    fork = BestCheckpoint(tmp_path / "c" / "checkpoints", monitor="teacher/map")
    fork.on_load_checkpoint(SimpleNamespace(ckpt_path=trainer.ckpt_path), None, {})
    with pytest.warns(UserWarning, match="dirpath has changed"):
        fork.load_state_dict(state)
    assert fork.summary(tmp_path / "c") is None


def test_a_monitor_no_validation_logs_is_a_config_error_at_setup(tmp_path):
    """`monitor=teacher/mAP` (a typo) wrote no best.ckpt and no `best` in results.json, without
    a word (until 2026-12-06)."""
    module = SimpleNamespace(eval_metrics={})
    for monitor in ("teacher/mAP", "map", "teacher/ap/"):
        with pytest.raises(ConfigError, match=f"best_checkpoint.monitor={monitor}: no validation"):
            BestCheckpoint(tmp_path, monitor=monitor).setup(None, module, "fit")


def test_periodic_saves_overwrite_last_ckpt_never_a_versioned_copy(tmp_path):
    """With Lightning's version counter, a run whose restored state did not name an existing
    last.ckpt (a stop before its first periodic save, a reused run folder) saved last-v1.ckpt
    from then on, and ckpt_path=auto resumed the older last.ckpt (until 2026-12-06)."""
    from labelmatch.run import build_callbacks
    from tests.conftest import compose_config

    cfg = compose_config(["checkpoint_every_n_steps=2"])
    callbacks = [
        c for c in build_callbacks(cfg, tmp_path)
        if isinstance(c, L.pytorch.callbacks.ModelCheckpoint) and c.save_last
    ]  # fmt: skip
    folder = Path(callbacks[0].dirpath)
    folder.mkdir(parents=True)
    torch.save({"global_step": -1}, folder / "last.ckpt")  # an earlier run's
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 2)))
    trainer = L.Trainer(
        max_steps=4, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_ScriptedValidation([]), data)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 4


def test_cuda_states_restore_onto_the_gpus_visible_now(monkeypatch):
    """Saved with two GPUs visible, resumed with one: set_rng_state_all indexed a device that is
    not there and stopped every retry with an IndexError (until 2026-12-06)."""
    states = capture_random_states()
    states["cuda"] = [
        torch.full((4,), 0, dtype=torch.uint8),
        torch.full((4,), 1, dtype=torch.uint8),
    ]
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(device))
    restore_random_states(states)
    assert calls == [0]


class _ScriptedValidation(L.LightningModule):
    """A linear model whose validations log a scripted `teacher/map` sequence."""

    def __init__(self, maps: list[float]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.maps = list(maps)
        self.eval_metrics: dict = {}

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        value = self.maps.pop(0)
        self.eval_metrics = {"teacher": {"map": value}, "student": {"map": value / 2}}
        self.log("teacher/map", value)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_best_checkpoint_keeps_the_highest_validation_and_the_earlier_of_a_tie(tmp_path):
    """Validations at steps 2, 4, 6, 8 score 0.2, 0.5, 0.4, 0.5: best.ckpt is step 4's, not
    overwritten by the worse step 6 nor by step 8's tie."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 2)))
    best = BestCheckpoint(tmp_path / "checkpoints", monitor="teacher/map")
    trainer = L.Trainer(
        max_steps=8, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=True, callbacks=[best], accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_ScriptedValidation([0.2, 0.5, 0.4, 0.5]), data, data)
    summary = best.summary(tmp_path)
    assert summary["step"] == 4 and summary["checkpoint"] == "checkpoints/best.ckpt"
    assert summary["teacher"] == {"map": 0.5} and summary["student"] == {"map": 0.25}
    saved = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    assert saved["global_step"] == 4


def test_last_ckpt_written_at_a_validation_step_knows_that_validations_best(tmp_path, caplog):
    """At a step with both a validation and a periodic checkpoint, last.ckpt is written when the
    batch ends, before the validation; BestCheckpoint writes it again after, or the last.ckpt a
    crash leaves would hold the best of before that validation (a resumed run does not validate
    that step again) and a resumed run could overwrite best.ckpt with a worse one."""
    from labelmatch.run import build_callbacks
    from tests.conftest import compose_config

    cfg = compose_config(["checkpoint_every_n_steps=2"])
    callbacks = [
        c for c in build_callbacks(cfg, tmp_path) if isinstance(c, L.pytorch.callbacks.Checkpoint)
    ]
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 2)))
    trainer = L.Trainer(
        max_steps=2, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, accelerator="cpu",
    )  # fmt: skip
    with caplog.at_level("INFO", logger="lightning.pytorch"):
        trainer.fit(_ScriptedValidation([0.3]), data, data)
    # written as ModelCheckpoint writes it (its save_weights_only), not at Lightning's default,
    # which logs "`weights_only` was not set" in every run's console
    assert "weights_only" not in caplog.text
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    (best_state,) = [v for k, v in saved["callbacks"].items() if k.startswith("BestCheckpoint")]
    assert saved["global_step"] == 2 and best_state["best_step"] == 2


def test_a_detector_rebuilt_for_its_checkpoint_reads_no_pretrained_weights():
    """evaluate, predict and export rebuild the detector and load the checkpoint's weights: any
    pretrained-weights key, at any depth (torchvision's `weights` of a nested backbone), is None,
    so nothing is read or downloaded (this machine has no network: a download would fail)."""
    from labelmatch.checkpoints import build_detector, without_pretrained_weights
    from tests.conftest import compose_config

    config = {"backbone_weights": "/nowhere.pth", "backbone": {"weights": "IMAGENET1K_V1",
              "layers": [{"weights_backbone": "x", "depth": 2}]}, "width": 8}  # fmt: skip
    assert without_pretrained_weights(config) == {
        "backbone_weights": None,
        "backbone": {"weights": None, "layers": [{"weights_backbone": None, "depth": 2}]},
        "width": 8,
    }
    model = OmegaConf.to_container(compose_config(["model=frcnn_mbv3_fpn"]).model, resolve=True)
    model["backbone"]["weights"] = "IMAGENET1K_V1"  # a run that started from ImageNet
    detector = build_detector(model, num_classes=3)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 4
