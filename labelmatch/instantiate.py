"""Hydra's `instantiate` for the entry points (run, evaluate, export), with bad input reported as
itself rather than inside Hydra's InstantiationException."""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.errors import DataError


def instantiate_datamodule(data_config: Any, **kwargs: Any) -> DetectionDataModule:
    """Hydra's `instantiate` of a data config (a `DetectionDataModule` and its nested `splits`);
    bad input found while building (a DataError or a missing file) is re-raised as itself, not
    inside Hydra's InstantiationException, so the entry points report it as one line."""
    try:
        return instantiate(data_config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (DataError, FileNotFoundError)):
            raise error.__cause__ from None
        raise


# The data builders of runs before the splits were nested (issue #15), by the splits they built.
_LEGACY_BUILDERS = {
    "digits_datamodule": "labelmatch.data.digits.DigitsSplits",
    "digits_fold_datamodule": "labelmatch.data.digits.DigitsFoldSplits",
    "glyphs_datamodule": "labelmatch.data.glyphs.GlyphsSplits",
    "coco_datamodule": "labelmatch.data.coco.CocoSplits",
    "coco_standard_datamodule": "labelmatch.data.paper_datasets.CocoStandardSplits",
    "coco_additional_datamodule": "labelmatch.data.paper_datasets.CocoAdditionalSplits",
    "voc_datamodule": "labelmatch.data.paper_datasets.VocSplits",
}


def upgrade_data_config(cfg: DictConfig) -> DictConfig:
    """`cfg` (a run's saved config) with a data config of the old flat form (`_target_:
    labelmatch.data.builders.NAME`, the splits' keys beside the loader's, the generator's seed
    `data_seed`) rewritten in place to today's `DetectionDataModule` with nested `splits`, so
    that older run directories still build their data. Interpolations are kept as written."""
    data = cfg.get("data")
    target = data.get("_target_", "") if isinstance(data, DictConfig) else ""
    prefix = "labelmatch.data.builders."
    if not target.startswith(prefix):
        return cfg
    splits_target = _LEGACY_BUILDERS[target.removeprefix(prefix)]
    splits_type = get_class(splits_target)
    fields = {field.name for field in dataclasses.fields(splits_type)} - {"seed"}
    keys = OmegaConf.to_container(data, resolve=False)
    splits = {"_target_": splits_target}
    splits.update({key: keys.pop(key) for key in list(keys) if key in fields})
    if "data_seed" in keys:
        splits["seed"] = keys.pop("data_seed")
    cfg.data = {**keys, "_target_": "labelmatch.data.datamodule.DetectionDataModule",
                "splits": splits}  # fmt: skip
    return cfg
