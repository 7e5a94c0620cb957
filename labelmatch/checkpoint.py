"""A trained checkpoint of `python -m labelmatch.run` (any method), for predict and evaluate.

The LightningModule's hyper-parameters carry everything needed to rebuild it: the detector's
config (`model_config`, an explicit `_target_`), the class names, the dataset's category ids, the
method and the val file; its state dict holds the student, the teacher and the thresholds.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.models.detection import FasterRCNN

from labelmatch.method.module import LabelMatchModule

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (not this project's, wrong categories, ...)."""


def load_module(path: str | Path) -> tuple[LabelMatchModule, dict[str, Any]]:
    """(module in eval mode on the CPU, the raw checkpoint dict) of a training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={path}: no such file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "state_dict" not in checkpoint or not hparams.get("model_config"):
        raise CheckpointError(
            f"checkpoint={path}: not a labelmatch training checkpoint (needs a state_dict and "
            "the module's hyper-parameters with model_config)"
        )
    model_config = dict(hparams["model_config"])
    if "backbone_weights" in model_config:
        model_config["backbone_weights"] = None  # the checkpoint holds every weight
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backbone_weights=None")
        detector = instantiate(model_config, num_classes=len(hparams["class_names"]))
    module = LabelMatchModule(detector, **hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), checkpoint


def pick_detector(module: LabelMatchModule, model: str) -> FasterRCNN:
    """The teacher or the student; a checkpoint without a trained teacher (supervised, or saved
    during burn-in) gives its student, with a warning."""
    if model not in MODELS:
        raise CheckpointError(f"model must be one of {MODELS}, got {model!r}")
    if model == "teacher" and (module.teacher is None or not bool(module.teacher_ready)):
        log.warning("the checkpoint has no trained teacher (method %s): using the student",
                    module.method["name"])  # fmt: skip
        return module.student
    return module.teacher if model == "teacher" else module.student


def training_config(checkpoint_path: str | Path) -> DictConfig | None:
    """The resolved Hydra config of the run that wrote `<run>/checkpoints/<name>.ckpt`, if that
    run directory is still there."""
    config_file = Path(checkpoint_path).resolve().parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(config_file) if config_file.is_file() else None
