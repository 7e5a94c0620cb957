"""The TrueType fonts matplotlib ships, and every character of a dataset rendered once per font.

Pasting a pre-rendered mask (rotated and downscaled per instance) is far cheaper than asking
FreeType for every glyph of every canvas, and it is the same ink whatever the target size.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import matplotlib
import PIL
from PIL import Image, ImageDraw, ImageFont, features

# Upright and slanted, light and bold, sans, serif and monospace: 21 faces with distinct letter
# shapes. Left out: the STIX size/non-unicode variants and cmex10/cmsy10 (symbols, no letters),
# cmmi10 (old-style digits that change height), DejaVu*Display (no Latin letters at all).
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)

# Large enough that every glyph is downscaled (never upscaled) to at most 48 px of height.
RENDER_SIZE = 96


def font_path(name: str) -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


@cache
def font_digests() -> dict[str, str]:
    """sha256 (hex, first 16 digits) of each font file's bytes, by file name: a matplotlib
    release that changes a font changes the ink, so the digests (not the names) key the
    dataset caches."""
    return {
        name: hashlib.sha256(font_path(name).read_bytes()).hexdigest()[:16] for name in FONT_FILES
    }


def renderer_version() -> str:
    """What the ink depends on besides the font files: FreeType rasterises the characters,
    Pillow rotates and resamples them."""
    return f"freetype {features.version('freetype2')}, pillow {PIL.__version__}"


def render_character(font: ImageFont.FreeTypeFont, character: str) -> Image.Image:
    """The anti-aliased ink of `character` as an "L" mask (255 = full ink) cropped to its ink."""
    left, top, right, bottom = font.getbbox(character)
    margin = 2
    mask = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin))
    ImageDraw.Draw(mask).text((margin - left, margin - top), character, font=font, fill=255)
    return mask.crop(mask.getbbox())


def render_bank(characters: str) -> list[dict[str, Image.Image]]:
    """Per font of `FONT_FILES`, every character's mask (`render_character` at RENDER_SIZE).

    The basic layout engine: a single character needs no shaping, and it does not depend on
    whether PIL was built with libraqm.
    """
    bank = []
    for name in FONT_FILES:
        font = ImageFont.truetype(
            str(font_path(name)), RENDER_SIZE, layout_engine=ImageFont.Layout.BASIC
        )
        bank.append({character: render_character(font, character) for character in characters})
    return bank
