"""Hydra entry points for the data config group: flat keys in, a DetectionDataModule out.

Every dataset ends as the same COCO-format paths (`CocoSplits`) and is read by the same code;
these builders only differ in where those paths come from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from labelmatch.data.coco import CocoSplits, load_coco_json
from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.digits import DigitsFoldSplits, DigitsSplits
from labelmatch.data.errors import DataError
from labelmatch.data.glyphs import GlyphsSplits
from labelmatch.data.paper_datasets import CocoAdditionalSplits, CocoStandardSplits, VocSplits
from labelmatch.data.scales import SCALE_KEYS, resolve_scales


def instantiate_datamodule(data_config: Any, **kwargs: Any) -> DetectionDataModule:
    """Hydra's `instantiate` of a data config; bad input found while building (a DataError or a
    missing file) is re-raised as itself, not inside Hydra's InstantiationException, so the
    entry points report it as one line."""
    try:
        return instantiate(data_config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (DataError, FileNotFoundError)):
            raise error.__cause__ from None
        raise


def _embedded_datamodule(
    splits_type: type, root: str, data_seed: int, keys: dict[str, Any]
) -> DetectionDataModule:
    """An embedded dataset's splits from the keys that are fields of `splits_type`, the loader
    from the rest. The generator's seed is `data_seed`: the key `seed` is the training seed,
    which goes to the loader (augmentation draws)."""
    fields = {field.name for field in dataclasses.fields(splits_type)} - {"root", "seed"}
    dataset_keys = {key: value for key, value in keys.items() if key in fields}
    loader_keys = {key: value for key, value in keys.items() if key not in fields}
    splits = splits_type(root=root, **dataset_keys, seed=data_seed)
    return DetectionDataModule(splits=splits, **loader_keys)


def digits_datamodule(root: str, data_seed: int = 0, **keys: Any) -> DetectionDataModule:
    """The embedded digits dataset (`DigitsSplits`' keys, e.g. `num_labeled`, `tail_ratio`;
    the other keys go to the `DetectionDataModule`), generated once into `root`."""
    return _embedded_datamodule(DigitsSplits, root, data_seed, keys)


def digits_fold_datamodule(root: str, data_seed: int = 0, **keys: Any) -> DetectionDataModule:
    """The digits with `percent` % of `num_train` canvases labeled (fold `fold`); the keys of
    `DigitsFoldSplits`, the rest for the `DetectionDataModule`."""
    return _embedded_datamodule(DigitsFoldSplits, root, data_seed, keys)


def glyphs_datamodule(root: str, data_seed: int = 0, **keys: Any) -> DetectionDataModule:
    """The embedded glyphs with `percent` % of the `num_train` pool labeled (fold `fold`); the
    keys of `GlyphsSplits`, the rest for the `DetectionDataModule`."""
    return _embedded_datamodule(GlyphsSplits, root, data_seed, keys)


def coco_datamodule(
    image_dir: str,
    labeled_json: str,
    val_json: str,
    unlabeled_json: str | None = None,
    **loader_kwargs: Any,
) -> DetectionDataModule:
    """Any COCO-format dataset: an image directory and three annotation files. Scale keys left
    null are derived from the labeled images' sizes (`labelmatch.data.scales`)."""
    splits = CocoSplits(
        image_dir=image_dir,
        labeled_json=labeled_json,
        unlabeled_json=unlabeled_json,
        val_json=val_json,
    )
    if any(key in loader_kwargs and loader_kwargs[key] is None for key in SCALE_KEYS):
        images = load_coco_json(labeled_json).get("images", [])
        loader_kwargs = resolve_scales(loader_kwargs, images, labeled_json)
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
