"""`python -m labelmatch.prepare {split, folder, coco_standard, ut_split, coco_additional, voc,
checksum} ...`

Writes the annotation files the experiments read (see README, "Your own COCO-format data" and
"The paper's experiments").
Bad input ends with one line naming the file and what is wrong, exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from labelmatch.data.errors import DataError
from labelmatch.data.split_files.coco_additional import write_coco_additional
from labelmatch.data.split_files.custom_split import write_custom_split
from labelmatch.data.split_files.folds import write_coco_standard
from labelmatch.data.split_files.image_folder import write_folder_coco
from labelmatch.data.split_files.sidecar import read_checksum
from labelmatch.data.split_files.unbiased_teacher import write_ut_split
from labelmatch.data.split_files.voc import write_voc

log = logging.getLogger("labelmatch.prepare")


def split(args: argparse.Namespace) -> None:
    labeled, unlabeled, short = write_custom_split(
        args.labeled_json, args.out, args.seed, args.percent, args.per_class, args.overwrite
    )
    print(labeled)
    print(unlabeled)
    for entry in short:
        print(
            f"class {entry['name']!r} (category id {entry['category_id']}): "
            f"{entry['labeled_images']} labeled images, fewer than {args.per_class} "
            f"(the json has {entry['available_images']} images with it)"
        )


def folder(args: argparse.Namespace) -> None:
    out, listing = write_folder_coco(
        args.images,
        args.out,
        args.relative_to,
        args.overwrite,
        not args.stored_orientation,
        args.exclude,
    )
    for path, reason in listing.skipped:
        print(f"skipped ({reason}): {path}")
    for exclusion in listing.exclusions:
        line = f"excluded {exclusion.excluded} of the {exclusion.listed} images of {exclusion.json}"
        if exclusion.listed and not exclusion.excluded:  # file names of another image_dir?
            image_dir = args.relative_to or args.images
            line += f" (none under --images; its file names are read relative to {image_dir})"
        print(line)
    print(f"{out}: {len(listing.coco['images'])} images, {len(listing.skipped)} files skipped")


def coco_standard(args: argparse.Namespace) -> None:
    seed, percent = args.seed, args.percent
    for path in write_coco_standard(args.data_dir, seed, percent, args.overwrite, args.out_dir):
        print(path)


def ut_split(args: argparse.Namespace) -> None:
    paths = write_ut_split(
        args.data_dir, args.supervision_file, args.percent, args.seed, args.overwrite, args.out_dir
    )
    for path in paths:
        print(path)


def coco_additional(args: argparse.Namespace) -> None:
    print(write_coco_additional(args.data_dir, args.overwrite, args.out_dir))


def voc(args: argparse.Namespace) -> None:
    for path in write_voc(args.devkit, args.overwrite, args.out_dir).values():
        print(path)


def checksum(args: argparse.Namespace) -> None:
    for path in args.files:
        print(f"{read_checksum(path)}  {path}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m labelmatch.prepare", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    sub = command(
        "split",
        split,
        "split your own COCO json into OUT/STEM.SEED@PERCENT.json (or STEM.SEED@Kper_class.json), "
        "its -unlabeled.json (the other images, annotations kept for statistics) and the sidecar",
    )
    sub.add_argument("--labeled-json", required=True, help="the COCO json of all labeled images")
    size = sub.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--percent",
        type=float,
        help="label this percentage of the images, 0 < P < 100 (the rest is the unlabeled file)",
    )
    size.add_argument("--per-class", type=int, help="label K images per class (rarest class first)")
    sub.add_argument("--seed", type=int, required=True, help="seed of the random draw")
    sub.add_argument("--out", required=True, help="folder for the two files and the sidecar")
    sub = command(
        "folder",
        folder,
        "an unlabeled COCO json of every image under a folder (sizes from the image headers)",
    )
    sub.add_argument("--images", required=True, help="the folder (searched recursively)")
    sub.add_argument("--out", required=True, help="the json to write, e.g. unlabeled.json")
    sub.add_argument(
        "--relative-to",
        help="write file names relative to this folder (your data.splits.image_dir); "
        "default: --images",
    )
    sub.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="JSON",
        help="leave out the images these COCO jsons list (e.g. your labeled and val files, when "
        "--images is the whole image root), matched by path: their file names are relative to "
        "--relative-to, as for training",
    )
    sub.add_argument(
        "--stored-orientation",
        action="store_true",
        help="sizes of the pixels as stored, for training with data.exif_orientation=false "
        "(default: as the EXIF orientation tag turns them, as viewers show them)",
    )
    sub = command(
        "coco_standard",
        coco_standard,
        "STAC fold SEED at PERCENT percent: DIR/annotations/semi_supervised/"
        "instances_train2017.SEED@PERCENT.json and ...-unlabeled.json",
    )
    sub.add_argument("--data-dir", required=True, help="COCO 2017 directory (with annotations/)")
    sub.add_argument(
        "--percent",
        type=float,
        required=True,
        help="0 < P <= 100 (N * P / 100 draws with replacement); 1, 5 or 10 in the paper",
    )
    sub.add_argument("--seed", type=int, required=True, help="the fold, 1-5 in the paper")
    sub = command(
        "ut_split",
        ut_split,
        "Unbiased Teacher's labeled set: DIR/annotations/semi_supervised/"
        "instances_train2017.utSEED@PERCENT.json and ...-unlabeled.json",
    )
    sub.add_argument("--data-dir", required=True, help="COCO 2017 directory (with annotations/)")
    sub.add_argument("--supervision-file", required=True, help="dataseed/COCO_supervision.txt")
    sub.add_argument(
        "--percent", type=float, required=True, help="one of the file's: 0.5, 1, 2, 5 or 10"
    )
    sub.add_argument("--seed", type=int, required=True, help="0-9")
    sub = command(
        "coco_additional",
        coco_additional,
        "annotations/image_info_unlabeled2017.json -> "
        "annotations/semi_supervised/instances_unlabeled2017.json",
    )
    sub.add_argument("--data-dir", required=True, help="COCO 2017 directory (with annotations/)")
    sub = command(
        "voc",
        voc,
        "VOC2007 trainval/test and VOC2012 trainval XML -> "
        "DEVKIT/annotations/{voc07_trainval,voc12_trainval,voc07_test}.json",
    )
    sub.add_argument("--devkit", required=True, help="the VOCdevkit directory")
    for name in ("coco_standard", "ut_split", "coco_additional", "voc"):
        commands.choices[name].add_argument(
            "--out-dir",
            help="write the files here instead (e.g. the dataset is read-only); "
            "train with data.splits.split_dir set to the same folder",
        )
    for sub in commands.choices.values():
        sub.add_argument("--overwrite", action="store_true", help="rewrite existing files")
    sub = command("checksum", checksum, "checksum of the image ids of COCO json files")
    sub.add_argument("files", nargs="+")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except DataError as error:
        log.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
