"""The embedded glyphs dataset in numbers and pictures (not a test): generation time, class
counts of the train pool, labeled boxes per class in the COCO-standard folds, object sizes,
and a grid of val canvases with their boxes (docs/glyphs_samples.png).

    .venv/bin/python benchmarks/glyphs_report.py                     # fresh folder, timed
    .venv/bin/python benchmarks/glyphs_report.py --grid docs/glyphs_samples.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from labelmatch.data.fonts import font_path
from labelmatch.data.glyphs import CATEGORIES, CONFUSABLE_GROUPS, FREQUENCY_ORDER, GlyphsSplits

GRID_COLUMNS, GRID_ROWS, GRID_ZOOM = 4, 2, 2


def _boxes_per_class(coco: dict) -> Counter:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return Counter(names[a["category_id"]] for a in coco["annotations"])


def _sample_grid(image_dir: Path, val: dict, out: Path) -> None:
    """The first val canvases, zoomed 2x (nearest: the pixels as the detector sees them), with
    their boxes and class names; a 128-colour palette keeps the PNG small."""
    names = {c["id"]: c["name"] for c in val["categories"]}
    size = val["images"][0]["width"] * GRID_ZOOM
    font = ImageFont.truetype(str(font_path("DejaVuSans-Bold.ttf")), 11)
    label_style = dict(font=font, fill=(255, 230, 0), stroke_width=2, stroke_fill=(0, 0, 0))
    grid = Image.new("RGB", (GRID_COLUMNS * (size + 4), GRID_ROWS * (size + 4)), "white")
    for n, image in enumerate(val["images"][: GRID_COLUMNS * GRID_ROWS]):
        canvas = Image.open(image_dir / image["file_name"]).convert("RGB")
        canvas = canvas.resize((size, size), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(canvas)
        for a in (a for a in val["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = (GRID_ZOOM * v for v in a["bbox"])
            draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(0, 200, 0))
            draw.text((x + 1, max(0, y - 13)), names[a["category_id"]], **label_style)
        grid.paste(canvas, ((n % GRID_COLUMNS) * (size + 4), (n // GRID_COLUMNS) * (size + 4)))
    grid.quantize(128).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="cache folder (default: a fresh temporary one)")
    parser.add_argument("--grid", type=Path, help="write the sample grid PNG here")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="glyphs-"))

    start = time.perf_counter()
    splits = {p: GlyphsSplits(root, percent=p).resolve() for p in (1, 5, 10)}
    print(f"generated (or reused) in {time.perf_counter() - start:.1f} s under {root}")

    train_json = splits[10].labeled_json.parent.parent / "train.json"
    train = json.loads(train_json.read_text())
    val = json.loads(splits[10].val_json.read_text())
    pool = _boxes_per_class(train)
    head, tail = FREQUENCY_ORDER[0], FREQUENCY_ORDER[-1]
    print(f"train pool: {len(train['images'])} images, {len(train['annotations'])} boxes "
          f"({train['info']['glyphs_not_placed']} glyphs found no spot); val: "
          f"{len(val['images'])} images, {len(val['annotations'])} boxes")  # fmt: skip
    print(f"head/tail: {head} {pool[head]} / {tail} {pool[tail]} = {pool[head] / pool[tail]:.1f}")
    print("confusable groups (pool boxes):")
    for group in CONFUSABLE_GROUPS:
        print(
            "  " + "  ".join(f"{c} {pool[c]} (rank {FREQUENCY_ORDER.index(c) + 1})" for c in group)
        )

    labeled = {
        p: _boxes_per_class(json.loads(s.labeled_json.read_text())) for p, s in splits.items()
    }
    print("\nclass  pool   1 %   5 %  10 %   (labeled boxes, fold 1)")
    for c in FREQUENCY_ORDER:
        print(f"{c:>5} {pool[c]:5d} {labeled[1][c]:5d} {labeled[5][c]:5d} {labeled[10][c]:5d}")
    for p, counts in labeled.items():
        rarest = min(counts[c["name"]] for c in CATEGORIES)
        few = {c["name"]: counts[c["name"]] for c in CATEGORIES if counts[c["name"]] <= 1}
        images = len(json.loads(splits[p].labeled_json.read_text())["images"])
        print(f"{p:>2} %: {images} labeled images, {sum(counts.values())} boxes, rarest class "
              f"{rarest} boxes; classes with at most one box: {few}")  # fmt: skip

    heights = np.array([a["bbox"][3] for a in train["annotations"]])
    areas = np.array([a["area"] for a in train["annotations"]])
    per_image = Counter(a["image_id"] for a in train["annotations"])
    print(f"\nbox height px: min {heights.min()}, median {np.median(heights):.0f}, "
          f"max {heights.max()}; COCO small (< 32^2) {np.mean(areas < 32**2):.0%}, "
          f"medium {np.mean(areas >= 32**2):.0%}; boxes per image: "
          f"{min(per_image.values())}-{max(per_image.values())}, "
          f"mean {len(heights) / len(train['images']):.1f}")  # fmt: skip
    if args.grid:
        _sample_grid(splits[10].image_dir, val, args.grid)
        print(f"wrote {args.grid} ({args.grid.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
