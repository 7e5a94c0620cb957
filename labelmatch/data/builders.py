"""Hydra entry points for the data config group: flat keys in, a DetectionDataModule out.

Both datasets end as the same four COCO-format paths (`CocoSplits`) and are read by the same
code; these builders only differ in where those paths come from.
"""

from __future__ import annotations

from typing import Any

from labelmatch.data.coco import CocoSplits
from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.digits import DigitsSplits


def digits_datamodule(
    root: str,
    num_labeled: int = 50,
    num_unlabeled: int = 1000,
    num_val: int = 300,
    image_size: int = 128,
    tail_ratio: float = 10.0,
    data_seed: int = 0,
    **loader_kwargs: Any,
) -> DetectionDataModule:
    """The embedded digits dataset (generated once into `root`, then cached)."""
    splits = DigitsSplits(
        root=root,
        num_labeled=num_labeled,
        num_unlabeled=num_unlabeled,
        num_val=num_val,
        image_size=image_size,
        tail_ratio=tail_ratio,
        seed=data_seed,
    )
    return DetectionDataModule(splits=splits, **loader_kwargs)


def coco_datamodule(
    image_dir: str,
    labeled_json: str,
    val_json: str,
    unlabeled_json: str | None = None,
    **loader_kwargs: Any,
) -> DetectionDataModule:
    """Any COCO-format dataset: an image directory and three annotation files."""
    splits = CocoSplits(
        image_dir=image_dir,
        labeled_json=labeled_json,
        unlabeled_json=unlabeled_json,
        val_json=val_json,
    )
    return DetectionDataModule(splits=splits, **loader_kwargs)
