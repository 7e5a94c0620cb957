"""Checkpoint files: written atomically, and checked against the data before they are loaded.

Lightning's own writer commits through fsspec, which stages the file in the system temp folder
and moves it over: across file systems (a local /tmp, the run directory on shared storage) that
move is a copy, and a process killed during it leaves a truncated `last.ckpt`. Here the file is
staged next to its destination and renamed with `os.replace`, atomic on POSIX: a reader sees the
old checkpoint or the new one, never a part.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from labelmatch.data.errors import DataError


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
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
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
