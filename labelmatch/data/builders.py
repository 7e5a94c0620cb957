"""Hydra entry points for the data config group: flat keys in, a DetectionDataModule out.

Every dataset ends as the same COCO-format paths (`CocoSplits`) and is read by the same code;
these builders only differ in where those paths come from.
"""

from __future__ import annotations

from typing import Any

from labelmatch.data.coco import CocoSplits
from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.digits import DigitsFoldSplits, DigitsSplits
from labelmatch.data.paper_datasets import CocoAdditionalSplits, CocoStandardSplits, VocSplits


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


def digits_fold_datamodule(
    root: str,
    num_train: int = 1000,
    percent: float = 10,
    fold: int = 1,
    num_val: int = 300,
    image_size: int = 128,
    tail_ratio: float = 10.0,
    data_seed: int = 0,
    **loader_kwargs: Any,
) -> DetectionDataModule:
    """The digits with `percent` % of `num_train` canvases labeled (fold `fold`)."""
    splits = DigitsFoldSplits(
        root=root,
        num_train=num_train,
        percent=percent,
        fold=fold,
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


def coco_standard_datamodule(
    root: str, fold: int = 1, percent: float = 10, split: str = "stac", **loader_kwargs: Any
) -> DetectionDataModule:
    """COCO-standard under `root` (the COCO 2017 directory); see `CocoStandardSplits`."""
    splits = CocoStandardSplits(root=root, fold=fold, percent=percent, split=split)
    return DetectionDataModule(splits=splits, **loader_kwargs)


def coco_additional_datamodule(root: str, **loader_kwargs: Any) -> DetectionDataModule:
    """COCO-additional under `root` (the COCO 2017 directory with unlabeled2017/)."""
    return DetectionDataModule(splits=CocoAdditionalSplits(root=root), **loader_kwargs)


def voc_datamodule(root: str, **loader_kwargs: Any) -> DetectionDataModule:
    """VOC07 trainval / VOC12 trainval / VOC07 test under `root` (the VOCdevkit directory)."""
    return DetectionDataModule(splits=VocSplits(root=root), **loader_kwargs)
