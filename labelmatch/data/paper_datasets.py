"""The paper's benchmark datasets (docs/method.md §6) under one directory `root` each: where their
files live, the check that they are there, and the command that prepares what is missing.

Each is a splits object whose `resolve()` returns a `CocoSplits` (as `DigitsSplits` does), run
by the data module before any model is built: a missing directory or file is a `DataError`
naming the path and the `python -m labelmatch.prepare ...` command that makes it. COCO-standard
folds and the COCO-additional unlabeled file are written on first use when missing, and existing
files are reused (so split files from other codebases drop in).

`split_dir` says where the split files are read and written when the dataset's own folder is
not the place (a read-only copy shared on a cluster): by default
`root/annotations/semi_supervised/` for COCO and `root/annotations/` for VOC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labelmatch.data.coco import CocoSplits
from labelmatch.data.errors import DataError
from labelmatch.data.split_files.coco_additional import write_coco_additional
from labelmatch.data.split_files.files import coco_split_dir, split_paths
from labelmatch.data.split_files.folds import write_coco_standard
from labelmatch.data.split_files.unbiased_teacher import ut_split_name
from labelmatch.data.split_files.voc import voc_annotation_paths

_COCO_LAYOUT = (
    "the COCO 2017 directory with train2017/, val2017/ and annotations/ "
    "(instances_train2017.json, instances_val2017.json)"
)
SPLIT_FAMILIES = ("stac", "unbiased_teacher")


def require(path: Path, what: str, fix: str) -> None:
    """DataError "PATH does not exist (WHAT): FIX" unless `path` exists."""
    if not path.exists():
        raise DataError(f"{path} does not exist ({what}): {fix}")


def _require_root(root: Path, layout: str, prepare_command: str) -> None:
    require(
        root,
        f"data.splits.root must be {layout}",
        f"get the dataset there, then `{prepare_command}`",
    )


@dataclass
class CocoStandardSplits:
    """COCO-standard: `percent` % of train2017 labeled (fold `fold` of the STAC sampler, or
    seed `fold` of Unbiased Teacher's lists with `split="unbiased_teacher"`), the rest of
    train2017 unlabeled, val2017 evaluated."""

    root: str | os.PathLike
    fold: int = 1
    percent: float = 10
    split: str = "stac"
    split_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLIT_FAMILIES:
            raise ValueError(
                f"data.splits.split must be one of {SPLIT_FAMILIES}, got {self.split!r}"
            )

    def prepare_command(self) -> str:
        out_dir = "" if self.split_dir is None else f" --out-dir {self.split_dir}"
        if self.split == "stac":
            return (
                f"python -m labelmatch.prepare coco_standard --data-dir {self.root} "
                f"--percent {self.percent:g} --seed {self.fold}{out_dir}"
            )
        return (
            f"python -m labelmatch.prepare ut_split --data-dir {self.root} --supervision-file "
            f"COCO_supervision.txt --percent {self.percent:g} --seed {self.fold}{out_dir}"
        )

    def resolve(self) -> CocoSplits:
        root = Path(self.root)
        command = self.prepare_command()
        _require_root(root, _COCO_LAYOUT, command)
        for folder in ("train2017", "val2017"):
            require(root / folder, "COCO 2017 images", f"extract {folder}.zip into {root}")
        val_json = root / "annotations" / "instances_val2017.json"
        require(val_json, "COCO 2017 annotations", "extract annotations_trainval2017.zip there")
        if self.split == "stac":
            train_json = root / "annotations" / "instances_train2017.json"
            require(train_json, "COCO 2017 annotations", "extract annotations_trainval2017.zip")
            labeled, unlabeled = write_coco_standard(
                root, self.fold, self.percent, out_dir=self.split_dir
            )
        else:
            name = ut_split_name(self.fold, self.percent)
            labeled, unlabeled = split_paths(coco_split_dir(root, self.split_dir), name)
            for path in (labeled, unlabeled):
                require(path, "Unbiased Teacher split", f"write it with `{command}`")
        return CocoSplits(
            image_dir=root / "train2017",
            labeled_json=labeled,
            unlabeled_json=unlabeled,
            val_json=val_json,
            val_image_dir=root / "val2017",
        )


@dataclass
class CocoAdditionalSplits:
    """COCO-additional: all of train2017 labeled, unlabeled2017 unlabeled, val2017 evaluated."""

    root: str | os.PathLike
    split_dir: str | os.PathLike | None = None

    def resolve(self) -> CocoSplits:
        root = Path(self.root)
        command = f"python -m labelmatch.prepare coco_additional --data-dir {root}"
        if self.split_dir is not None:
            command += f" --out-dir {self.split_dir}"
        layout = (
            "the COCO 2017 directory with train2017/, val2017/, unlabeled2017/ and annotations/ "
            "(instances_train2017.json, instances_val2017.json, image_info_unlabeled2017.json)"
        )
        _require_root(root, layout, command)
        for folder in ("train2017", "val2017", "unlabeled2017"):
            require(root / folder, "COCO 2017 images", f"extract {folder}.zip into {root}")
        annotations = root / "annotations"
        for name in ("instances_train2017", "instances_val2017", "image_info_unlabeled2017"):
            require(annotations / f"{name}.json", "COCO 2017 annotations", f"then `{command}`")
        unlabeled_json = write_coco_additional(root, out_dir=self.split_dir)
        return CocoSplits(
            image_dir=root / "train2017",
            labeled_json=annotations / "instances_train2017.json",
            unlabeled_json=unlabeled_json,
            val_json=annotations / "instances_val2017.json",
            unlabeled_image_dir=root / "unlabeled2017",
            val_image_dir=root / "val2017",
        )


@dataclass
class VocSplits:
    """VOC: VOC07 trainval labeled, VOC12 trainval unlabeled, VOC07 test evaluated; `root` is
    the VOCdevkit directory (with VOC2007/ and VOC2012/), converted once by `prepare voc`."""

    root: str | os.PathLike
    split_dir: str | os.PathLike | None = None

    def resolve(self) -> CocoSplits:
        root = Path(self.root)
        command = f"python -m labelmatch.prepare voc --devkit {root}"
        if self.split_dir is not None:
            command += f" --out-dir {self.split_dir}"
        _require_root(root, "the VOCdevkit directory with VOC2007/ and VOC2012/", command)
        paths = voc_annotation_paths(root, self.split_dir)
        for path in paths.values():
            require(path, "VOC converted to COCO json", f"write it with `{command}`")
        return CocoSplits(
            image_dir=root,
            labeled_json=paths["voc07_trainval"],
            unlabeled_json=paths["voc12_trainval"],
            val_json=paths["voc07_test"],
        )
