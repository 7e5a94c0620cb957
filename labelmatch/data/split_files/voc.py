"""PASCAL VOC XML -> COCO json for the VOC benchmark (docs/method.md §6): VOC07 trainval labeled,
VOC12 trainval unlabeled, VOC07 test evaluated; 20 classes.

Boxes follow MMDetection's converter (`tools/dataset_converters/pascal_voc.py`): VOC's 1-based
pixel corners minus 1, `[x, y, w, h] = [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]`.
`difficult` objects are kept with `iscrowd=1` (and `ignore=1`): COCOeval then matches
detections on them without counting them either way, and training skips crowd boxes, as
MMDetection's VOC dataset ignores difficult boxes.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from labelmatch.data.errors import DataError
from labelmatch.data.images import image_header_size
from labelmatch.data.split_files.files import write_json_atomic
from labelmatch.data.split_files.sidecar import write_sidecar

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
VOC_CATEGORIES = [{"id": i + 1, "name": name} for i, name in enumerate(VOC_CLASSES)]

# Output name -> (year folder in the devkit, image set of ImageSets/Main).
VOC_SPLITS = {
    "voc07_trainval": ("VOC2007", "trainval"),
    "voc12_trainval": ("VOC2012", "trainval"),
    "voc07_test": ("VOC2007", "test"),
}


@dataclass
class VocObject:
    name: str
    difficult: bool
    corners: tuple[float, float, float, float]  # VOC's 1-based xmin, ymin, xmax, ymax


def voc_image_id(name: str, where: str) -> int:
    """Integer id from a VOC image name: "000005" -> 5, "2008_000008" -> 2008000008 (unique
    across VOC2007 and VOC2012, and readable back into the file name)."""
    match = re.fullmatch(r"(?:(\d{4})_)?(\d{6})", name)
    if match is None:
        raise DataError(f"{where}: image name {name!r} is not a VOC name (000005 or 2008_000008)")
    return int((match.group(1) or "") + match.group(2))


def coco_annotation(obj: VocObject, annotation_id: int, image_id: int) -> dict:
    """One COCO annotation of a VOC object (MMDetection's box convention, difficult -> crowd)."""
    xmin, ymin, xmax, ymax = obj.corners
    width, height = xmax - xmin, ymax - ymin
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": VOC_CLASSES.index(obj.name) + 1,
        "bbox": [xmin - 1, ymin - 1, width, height],
        "area": width * height,
        "iscrowd": int(obj.difficult),
        "ignore": int(obj.difficult),
    }


def _text(element: ET.Element, path: str, where: str) -> str:
    found = element.findtext(path)
    if found is None:
        raise DataError(f"{where}: missing <{path}>")
    return found.strip()


def parse_voc_xml(xml_path: Path) -> tuple[int | None, int | None, list[VocObject]]:
    """(width or None, height or None, objects) of one VOC annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as error:
        raise DataError(f"{xml_path}: cannot read VOC XML: {error}") from error
    size = root.find("size")
    width = height = None
    if size is not None:
        try:
            width = int(float(size.findtext("width") or 0)) or None
            height = int(float(size.findtext("height") or 0)) or None
        except ValueError as error:
            raise DataError(f"{xml_path}: <size> is not numeric: {error}") from error
    objects = []
    for index, element in enumerate(root.iter("object")):
        where = f"{xml_path}: object {index}"
        name = _text(element, "name", where)
        if name not in VOC_CLASSES:
            raise DataError(f"{where}: unknown class {name!r} (VOC has {list(VOC_CLASSES)})")
        texts = [_text(element, f"bndbox/{key}", where) for key in ("xmin", "ymin", "xmax", "ymax")]
        try:  # a missing field is _text's DataError (itself a ValueError), raised above
            corners = tuple(float(text) for text in texts)
        except ValueError as error:
            raise DataError(f"{where}: bndbox is not numeric: {error}") from error
        difficult = element.findtext("difficult", "0").strip() == "1"
        objects.append(VocObject(name, difficult, corners))
    return width, height, objects


def voc_to_coco(devkit: Path, year: str, image_set: str) -> tuple[dict, dict[str, int]]:
    """COCO dict of `devkit/year/ImageSets/Main/image_set.txt` (file names relative to the
    devkit) and a report of counts (images, objects, difficult, sizes read from the image)."""
    list_file = devkit / year / "ImageSets" / "Main" / f"{image_set}.txt"
    if not list_file.is_file():
        raise DataError(f"{list_file}: VOC image list does not exist ({year} not extracted?)")
    images, annotations = [], []
    report = {"images": 0, "objects": 0, "difficult": 0, "size_read_from_image": 0}
    for name in list_file.read_text().split():
        xml_path = devkit / year / "Annotations" / f"{name}.xml"
        if not xml_path.is_file():
            raise DataError(f"{xml_path}: annotation of image {name} in {list_file} is missing")
        width, height, objects = parse_voc_xml(xml_path)
        file_name = f"{year}/JPEGImages/{name}.jpg"
        if width is None or height is None:  # a few VOC files have no or zero <size>
            try:
                # the size the loaders read (turned by an EXIF orientation tag, the default)
                width, height = image_header_size(devkit / file_name)
            except (OSError, ValueError) as error:  # missing or not an image
                raise DataError(
                    f"{xml_path} has no <size>, and its image {devkit / file_name} cannot be "
                    f"read for it: {error}"
                ) from error
            report["size_read_from_image"] += 1
        image_id = voc_image_id(name, str(list_file))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            annotations.append(coco_annotation(obj, len(annotations) + 1, image_id))
            report["difficult"] += obj.difficult
        report["images"] += 1
        report["objects"] += len(objects)
    coco = {"images": images, "annotations": annotations, "categories": VOC_CATEGORIES}
    return coco, report


def voc_annotation_paths(
    devkit: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Where `write_voc` puts each split: `out_dir/<name>.json`, by default
    `devkit/annotations/<name>.json`."""
    folder = Path(devkit) / "annotations" if out_dir is None else Path(out_dir)
    return {name: folder / f"{name}.json" for name in VOC_SPLITS}


def write_voc(
    devkit: str | os.PathLike,
    overwrite: bool = False,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Convert the three VOC splits to `{voc07_trainval, voc12_trainval, voc07_test}.json` in
    `out_dir` (default `devkit/annotations/`; the labeled one with its sidecar); existing files
    are kept unless `overwrite`. Image paths in them are relative to `devkit` wherever they go."""
    devkit = Path(devkit)
    if not devkit.is_dir():
        raise DataError(f"{devkit}: VOCdevkit directory does not exist")
    paths = voc_annotation_paths(devkit, out_dir)
    for name, (year, image_set) in VOC_SPLITS.items():
        if paths[name].is_file() and not overwrite:
            log.debug("reusing %s", paths[name])
            continue
        coco, report = voc_to_coco(devkit, year, image_set)
        write_json_atomic(paths[name], coco)
        if name == "voc07_trainval":  # the labeled split
            write_sidecar(paths[name], coco, {"source": f"{year}/ImageSets/Main/{image_set}.txt"})
        log.info("wrote %s: %s", paths[name], report)
    return paths
