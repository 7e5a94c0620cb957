"""Checkpoint files: written atomically, checked against the data before they are loaded, and
read back into a module for the predict and evaluate entry points.

Lightning's own writer commits through fsspec, which stages the file in the system temp folder
and moves it over: across file systems (a local /tmp, the run directory on shared storage) that
move is a copy, and a process killed during it leaves a truncated `last.ckpt`. Here the file is
staged next to its destination and renamed with `os.replace`, atomic on POSIX: a reader sees the
old checkpoint or the new one, never a part.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torchvision.models.detection import FasterRCNN

from labelmatch.data.errors import DataError
from labelmatch.instantiate import upgrade_data_config
from labelmatch.method.module import LabelMatchModule

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are atomic (temp file in the same folder, fsync,
    `os.replace`); remote paths (s3://, ...) go through Lightning's writer unchanged."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(str(path).removeprefix("file://")))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save(obj, path)` that never leaves a partial file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created as open() creates files, 0666 less the umask, as a plain torch.save would: a
    # shared run folder's group can read the checkpoint (tempfile.mkstemp's 0600 stayed with
    # the file through os.replace until 2026-12-06). "x": never an existing file.
    temp_name = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temp_name, "xb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _read_checkpoint(path: Path, option: str) -> dict[str, Any]:
    if not get_filesystem(str(path)).isfile(str(path)):
        raise FileNotFoundError(f"{option}: no checkpoint at {path}")
    try:
        # mmap: only the tensors looked at below are read from disk.
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ...
        raise DataError(f"{option}: {path} is not a readable checkpoint ({error})") from None


def check_checkpoint_classes(
    path: str | os.PathLike, option: str, class_names: list[str], category_ids: list[int]
) -> None:
    """DataError naming `path` when its detector was trained on other classes than the data's.

    A checkpoint of this project carries its class names and category ids in its
    hyper-parameters; a plain detector state dict only its classifier size, C + 1.
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path, option)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if hparams and "class_names" in hparams:
        saved = list(zip(hparams["class_names"], hparams.get("category_ids", [])))
        wanted = list(zip(class_names, category_ids))
        if saved != wanted:
            raise DataError(
                f"{option}: {path} was trained on {len(saved)} classes (name, category id) "
                f"{saved}, the data has {len(wanted)}: {wanted}"
            )
        return
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    weights = [v for k, v in state.items() if k.endswith("box_predictor.cls_score.weight")]
    if not weights:
        rank_zero_warn(f"{option}: {path} has no classifier weights to check the classes against")
        return
    if weights[0].shape[0] != len(class_names) + 1:
        raise DataError(
            f"{option}: {path} has a classifier for {weights[0].shape[0] - 1} classes, the data "
            f"has {len(class_names)}"
        )


def load_module(
    path: str | os.PathLike, option: str = "checkpoint"
) -> tuple[LabelMatchModule, dict]:
    """(module in eval mode on the CPU, the raw checkpoint) of a `python -m labelmatch.run`
    checkpoint of any method. Its hyper-parameters hold what rebuilds the module: the detector's
    config (`model_config`, an explicit `_target_`), class names, category ids, method, val file;
    its state dict the student, the teacher and the thresholds."""
    path = Path(path)
    checkpoint = _read_checkpoint(path, option)
    if not isinstance(checkpoint, dict):  # a pickled list, a TorchScript module: refused below
        checkpoint = {}
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "state_dict" not in checkpoint or not hparams.get("model_config"):
        raise DataError(
            f"{option}: {path} is not a training checkpoint of this project (it needs a "
            "state_dict and the module's hyper-parameters with model_config)"
        )
    detector = build_detector(hparams["model_config"], len(hparams["class_names"]))
    module = LabelMatchModule(detector, **hparams)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.eval(), checkpoint


# Keys of pretrained weights: the project's builders' (a file) and torchvision's (an enum name,
# downloaded): `weights`, `weights_backbone`, and a nested backbone's `weights`.
PRETRAINED_KEYS = ("backbone_weights", "weights", "weights_backbone")


def build_detector(model_config: dict[str, Any], num_classes: int) -> FasterRCNN:
    """The detector of a `model` config (its `_target_` builder), for weights loaded afterwards:
    no pretrained weights are read or downloaded, whatever the config names, at any depth."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone_weights=None")
        return instantiate(without_pretrained_weights(model_config), num_classes=num_classes)


def without_pretrained_weights(config: Any) -> Any:
    """`config` (nested dicts and lists) with every PRETRAINED_KEYS entry None: the checkpoint
    holds every weight."""
    if isinstance(config, dict):
        return {
            key: None if key in PRETRAINED_KEYS else without_pretrained_weights(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [without_pretrained_weights(value) for value in config]
    return config


def pick_detector(module: LabelMatchModule, model: str) -> FasterRCNN:
    """The teacher or the student; a checkpoint without a trained teacher (supervised, or saved
    during burn-in) gives its student, with a warning."""
    if model not in MODELS:
        raise DataError(f"model must be one of {MODELS}, got {model!r}")
    if model == "teacher" and (module.teacher is None or not bool(module.teacher_ready)):
        name = module.method["name"]
        log.warning("the checkpoint has no trained teacher (method %s): using the student", name)
        return module.student
    return module.teacher if model == "teacher" else module.student


def training_reading(checkpoint: dict, trained: DictConfig | None) -> dict[str, Any]:
    """How the training run read its evaluation images (test_scale, max_size,
    exif_orientation; a key it does not know is left out): what `checkpoint` saved (the data
    module's state, since 2026-12-05), else `trained`, its run's config (`training_config`), so
    a checkpoint moved out of its run directory still knows."""
    saved = (checkpoint.get("DetectionDataModule") or {}).get("evaluation_view") or {}
    reading = {}
    for key in ("test_scale", "max_size", "exif_orientation"):
        value = saved.get(key, trained.data.get(key) if trained else None)
        if value is not None:
            reading[key] = value
    return reading


def training_config(checkpoint_path: str | os.PathLike) -> DictConfig | None:
    """The resolved Hydra config of the run that wrote `<run>/checkpoints/<name>.ckpt`, if that
    run directory is still there (an older run's data config upgraded to today's form)."""
    config_file = Path(checkpoint_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if not config_file.is_file():
        return None
    return upgrade_data_config(OmegaConf.load(config_file))
