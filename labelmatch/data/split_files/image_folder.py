"""An unlabeled COCO json from a folder of images (`python -m labelmatch.prepare folder`).

Every file under the folder (recursively) is opened with PIL, which reads the header only: the
size comes without decoding the pixels, so a folder of 100k images takes seconds. Files the
training loaders could not read (text files, truncated headers, formats they cannot decode such
as BMP and TIFF, animated GIFs) are listed with the reason and skipped. Images are
sorted by their path relative to `relative_to` and numbered 1..N in that order, so the same
folder always gives the same ids and order, whatever order the file system lists it in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from labelmatch.data.errors import DataError
from labelmatch.data.images import image_header_size
from labelmatch.data.split_files.files import write_json_atomic

log = logging.getLogger(__name__)

# What `labelmatch.data.images.read_header` raises for a file the loaders cannot read.
HEADER_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


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


def folder_coco(
    images: Path, relative_to: Path, exif_orientation: bool = True
) -> tuple[dict, list[tuple[Path, str]]]:
    """(COCO dict with `images` and no annotations, (file, reason) of each file skipped as
    unreadable).

    `file_name` is relative to `relative_to` (what `data.splits.image_dir` will be), which must
    contain `images`. Sizes are those the loaders read with `data.exif_orientation` =
    `exif_orientation` (turned by the EXIF orientation tag when true)."""
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
    files = sorted(
        (path for path in images.rglob("*") if path.is_file()),
        key=lambda path: path.relative_to(images).as_posix(),
    )
    records, skipped = [], []
    for path in files:
        try:
            width, height = image_header_size(path, exif_orientation)
        except HEADER_ERRORS as error:
            skipped.append((path, unreadable_reason(error)))
            continue
        file_name = (folder / path.relative_to(images)).relative_to(root).as_posix()
        records.append(
            {"id": len(records) + 1, "file_name": file_name, "width": width, "height": height}
        )
    if not records:
        raise DataError(f"--images {images}: no readable image among its {len(files)} files")
    # No `categories`: an unlabeled file may have none (as COCO's image_info_unlabeled2017.json);
    # the labeled file's categories are the dataset's.
    return {"images": records, "annotations": []}, skipped


def write_folder_coco(
    images: str | os.PathLike,
    out: str | os.PathLike,
    relative_to: str | os.PathLike | None = None,
    overwrite: bool = False,
    exif_orientation: bool = True,
) -> tuple[Path, int, list[tuple[Path, str]]]:
    """Write the unlabeled json of `images` to `out`; returns (out, images written, (file,
    reason) of each file skipped)."""
    images, out = Path(images), Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists: pass --overwrite to replace it")
    coco, skipped = folder_coco(
        images, Path(relative_to) if relative_to else images, exif_orientation
    )
    write_json_atomic(out, coco)
    log.info("wrote %s: %d images, %d files skipped", out, len(coco["images"]), len(skipped))
    return out, len(coco["images"]), skipped
