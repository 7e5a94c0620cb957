"""An unlabeled COCO json from a folder of images (`python -m labelmatch.prepare folder`).

Every file under the folder (recursively) is opened with PIL, which reads the header only: the
size comes without decoding the pixels, so a folder of 100k images takes seconds. Files the
training loaders could not read (text files, truncated headers, formats they cannot decode such
as BMP and TIFF, animated GIFs) are listed with the reason and skipped. Images are
sorted by their path relative to `relative_to` and numbered 1..N in that order, so the same
folder always gives the same ids and order, whatever order the file system lists it in.

`exclude` leaves out the images other COCO jsons list (the labeled and val files, when the folder
is the whole image root): matched by path, each json's `file_name` joined to `relative_to` (the
`data.splits.image_dir` both are read with), links resolved, as the loaders would find the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import UnidentifiedImageError

from labelmatch.data.coco import load_coco_json
from labelmatch.data.errors import DataError
from labelmatch.data.images import HEADER_ERRORS, image_header_size
from labelmatch.data.split_files.files import write_json_atomic

log = logging.getLogger(__name__)


def image_size(path: Path, exif_orientation: bool = True) -> tuple[int, int] | None:
    """(width, height) from the image header, turned by its EXIF orientation unless
    `exif_orientation` is false, or None when the file is not an image the training loaders can
    decode (`labelmatch.data.images.image_header_size`)."""
    try:
        return image_header_size(path, exif_orientation)
    except HEADER_ERRORS:
        return None


def unreadable_reason(error: Exception) -> str:
    """Why the header of a file was refused, for a line that names the file itself: PIL's and
    the OS's messages repeat the path, read_header's own ones (an undecodable format, an
    animated GIF) say what is wrong."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image: PIL identifies no image format in it"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # e.g. Permission denied
    return str(error) or type(error).__name__


@dataclass
class Exclusion:
    """What one `--exclude` json left out: of the `listed` images it names, `excluded` were
    found under the folder."""

    json: Path
    listed: int
    excluded: int = 0


@dataclass
class FolderListing:
    """The unlabeled COCO dict of a folder, the files skipped as unreadable (file, reason), and
    what each `--exclude` json left out."""

    coco: dict
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    exclusions: list[Exclusion] = field(default_factory=list)


def image_path(root: str | os.PathLike, file_name: str) -> str:
    """The file the loaders read `file_name` from with `data.splits.image_dir` = `root`: joined
    as they join it, links resolved (`./`, `a/../` and a link to the folder name one file)."""
    return os.path.realpath(os.path.join(root, file_name))


def listed_images(path: Path, root: str | os.PathLike) -> tuple[int, set[str]]:
    """(number of image records, their `image_path`s) of the COCO json `path`, whose file
    names are relative to `root`; DataError naming `--exclude`, the file and the record."""
    try:
        coco = load_coco_json(path, require_categories=False)
    except DataError as error:
        raise DataError(f"--exclude {error}") from None
    except OSError as error:  # no permission to read it, ...
        raise DataError(f"--exclude {path}: cannot read it ({error.strerror or error})") from None
    paths = set()
    for position, image in enumerate(coco["images"]):
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str) or not file_name:
            raise DataError(
                f"--exclude {path}: image record {position} needs a string 'file_name', "
                f"got {image!r}"
            )
        paths.add(image_path(root, file_name))
    return len(coco["images"]), paths


def folder_coco(
    images: Path,
    relative_to: Path,
    exif_orientation: bool = True,
    exclude: Sequence[str | os.PathLike] = (),
) -> FolderListing:
    """The COCO dict (`images`, no annotations) of the images under `images` but those the
    `exclude` jsons list, the files skipped as unreadable and what each json excluded.

    `file_name` is relative to `relative_to` (what `data.splits.image_dir` will be), which must
    contain `images`; so are the `exclude` jsons' file names. Sizes are those the loaders read
    with `data.exif_orientation` = `exif_orientation` (turned by the EXIF orientation tag when
    true)."""
    if not images.is_dir():
        raise DataError(f"--images {images}: no such folder")
    # As written (links kept, so a linked image is named by its link), else with links resolved
    # (--relative-to given through a link to the folder holding --images).
    for folder, root in (
        (Path(os.path.abspath(images)), Path(os.path.abspath(relative_to))),
        (images.resolve(), relative_to.resolve()),
    ):
        if folder.is_relative_to(root):
            break
    else:
        raise DataError(f"--relative-to {relative_to} does not contain --images {images}")
    # Every json is read before the folder: a bad one stops the command before the long part.
    image_dir = os.path.abspath(relative_to)
    excluded_by = []
    for json_path in map(Path, exclude):
        listed, paths = listed_images(json_path, image_dir)
        excluded_by.append((Exclusion(json_path, listed), paths))
    files = sorted(
        (path for path in images.rglob("*") if path.is_file()),
        key=lambda path: path.relative_to(images).as_posix(),
    )
    listing = FolderListing({"images": [], "annotations": []})
    records = listing.coco["images"]
    excluded_files = 0
    for path in files:
        file_name = (folder / path.relative_to(images)).relative_to(root).as_posix()
        excluding = []
        if excluded_by:  # resolving each file's path costs a few syscalls: only when excluding
            where = image_path(image_dir, file_name)
            excluding = [exclusion for exclusion, paths in excluded_by if where in paths]
        for exclusion in excluding:
            exclusion.excluded += 1
        if excluding:  # not even its header is read
            excluded_files += 1
            continue
        try:
            width, height = image_header_size(path, exif_orientation)
        except HEADER_ERRORS as error:
            listing.skipped.append((path, unreadable_reason(error)))
            continue
        records.append(
            {"id": len(records) + 1, "file_name": file_name, "width": width, "height": height}
        )
    if not records:
        excluded = f", {excluded_files} of them excluded" if excluded_files else ""
        raise DataError(
            f"--images {images}: no readable image among its {len(files)} files{excluded}"
        )
    # No `categories`: an unlabeled file may have none (as COCO's image_info_unlabeled2017.json);
    # the labeled file's categories are the dataset's.
    listing.exclusions = [exclusion for exclusion, _ in excluded_by]
    return listing


def write_folder_coco(
    images: str | os.PathLike,
    out: str | os.PathLike,
    relative_to: str | os.PathLike | None = None,
    overwrite: bool = False,
    exif_orientation: bool = True,
    exclude: Sequence[str | os.PathLike] = (),
) -> tuple[Path, FolderListing]:
    """Write the unlabeled json of `images` (but the images the `exclude` jsons list) to `out`;
    returns (out, what was listed: `folder_coco`)."""
    images, out = Path(images), Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists: pass --overwrite to replace it")
    listing = folder_coco(
        images, Path(relative_to) if relative_to else images, exif_orientation, exclude
    )
    write_json_atomic(out, listing.coco)
    log.info(
        "wrote %s: %d images, %d files skipped",
        out,
        len(listing.coco["images"]),
        len(listing.skipped),
    )
    return out, listing
