"""Image files as every loader reads them: the header (size, EXIF orientation) and the pixels.

Phone and camera JPEGs often store their pixels sideways or upside down with an EXIF
orientation tag that tells viewers how to turn them. Annotation tools show (and box) the image
turned, and so does the official code's loader (MMDetection's `LoadImageFromFile`, mmcv's 'color'
flag: OpenCV's imdecode applies the tag since OpenCV 3.3); torchvision's `decode_image` does not
unless asked, and only for JPEG and PNG. Here the tag is applied by default for every format
(`data.exif_orientation`, docs/method.md §8), by `oriented` (PIL's `ImageOps.exif_transpose`
rule), so a record's width and height, its boxes and the decoded pixels are all in the frame a
viewer shows. The header check compares a record with that size, and names the tag when the
record has the other frame's size.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

# The formats torchvision.io.decode_image reads (the loaders decode with it); PIL, which reads
# the headers, identifies more (BMP, TIFF, ...), which training could then not decode. MPO is
# PIL's name for a JPEG with embedded previews (many phone cameras write them): decode_image
# reads its first image, a plain JPEG.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP")

EXIF_ORIENTATION_TAG = 0x0112

# What `read_header` raises for a file the loaders cannot read.
HEADER_ERRORS = (OSError, ValueError, Image.DecompressionBombError)
# What `decode_rgb` raises for a file whose data past a readable header is damaged.
DECODE_ERRORS = (RuntimeError, OSError, ValueError)

# EXIF orientation -> the image axes flipped after a transpose (5-8) or without one (1-4), as
# PIL's exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
# 7 transverse, 8 rotate 90 counter-clockwise. Axes are (-2 rows, -1 columns).
_FLIPS = {1: (), 2: (-1,), 3: (-2, -1), 4: (-2,), 5: (), 6: (-1,), 7: (-2, -1), 8: (-2,)}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: its pixels' size as stored and its EXIF orientation
    (1-8; 1, the pixels as stored, when the file has no tag or a value outside 1-8)."""

    width: int
    height: int
    orientation: int = 1

    def size(self, exif_orientation: bool = True) -> tuple[int, int]:
        """(width, height) of the decoded image: as a viewer shows it when `exif_orientation`
        (5-8 turn it by 90 degrees), else as stored."""
        if exif_orientation and self.orientation >= 5:
            return self.height, self.width
        return self.width, self.height


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, read from its header (JPEG's APP1, PNG's eXIf
    chunk before the pixels, WebP's EXIF chunk): 1-8, or 1 without a usable one. Damaged EXIF
    counts as none, as viewers treat it."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():  # PIL warns of each damaged field it skips
            warnings.simplefilter("ignore")
            exif.load(raw)
    except Exception:  # PIL's TIFF parser raises SyntaxError, struct.error, ... on damage
        return 1
    value = exif.get(EXIF_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _FLIPS else 1


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The header of an image file (no decoding). OSError (or ValueError /
    DecompressionBombError) when PIL cannot identify it or the loaders could not decode it."""
    with Image.open(path) as image:
        if image.format not in DECODABLE_FORMATS:
            raise OSError(
                f"{image.format} files cannot be decoded for training "
                f"(supported: {', '.join(DECODABLE_FORMATS)})"
            )
        # decode_image returns every frame of an animated GIF ([frames, 3, H, W]), not an image
        try:
            frames = getattr(image, "n_frames", 1)
        except (EOFError, IndexError, struct.error) as error:  # PIL on a truncated GIF
            raise OSError(f"damaged image: its frames cannot be counted ({error!r})") from error
        if image.format == "GIF" and frames > 1:
            raise OSError(f"an animated GIF of {frames} frames; one image per file is needed")
        width, height = image.size
        return ImageHeader(width, height, exif_orientation(image))


def image_header_size(path: str | os.PathLike, exif_orientation: bool = True) -> tuple[int, int]:
    """(width, height) of the image the loaders decode from `path`, from its header alone
    (`read_header`, whose errors it raises; `ImageHeader.size`)."""
    return read_header(path).size(exif_orientation)


def oriented(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """`image` [..., H, W] turned as EXIF `orientation` tells a viewer to show it: [..., H, W]
    for 1-4, [..., W, H] for 5-8. 1 returns `image` itself; the others a new tensor."""
    if orientation == 1:
        return image
    if orientation >= 5:
        image = image.transpose(-2, -1)
    flips = _FLIPS[orientation]
    return image.flip(flips) if flips else image.contiguous()


def decode_rgb(path: str | os.PathLike, orientation: int = 1) -> torch.Tensor:
    """The pixels of `path` as RGB, uint8 [3, H, W] (uint16 for a 16-bit PNG), turned by EXIF
    `orientation` (the header's, `read_header`; 1 keeps them as stored). Raises what
    torchvision's decoder raises (RuntimeError, OSError, ValueError) on damaged data."""
    return oriented(decode_image(str(path), mode=ImageReadMode.RGB), orientation)
