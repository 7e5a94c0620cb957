"""Image files as the loaders read them: EXIF orientation in the header, the turned pixels, and
what the dataset, predict and prepare do with it (labelmatch/data/images.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps
from torchvision import tv_tensors

from labelmatch.data.categories import CategoryMap
from labelmatch.data.coco import CocoDetection
from labelmatch.data.errors import DataError
from labelmatch.data.images import (
    HEADER_ERRORS,
    ImageHeader,
    decode_rgb,
    oriented,
    read_header,
)

# 2 x 3 (h x w) image of values 1..6, rows [1 2 3], [4 5 6]; each orientation as a viewer shows
# it (EXIF 2.32, Orientation: where row 0 and column 0 of the stored pixels go), by hand.
STORED = [[1, 2, 3], [4, 5, 6]]
SHOWN = {
    1: [[1, 2, 3], [4, 5, 6]],
    2: [[3, 2, 1], [6, 5, 4]],  # mirrored left-right
    3: [[6, 5, 4], [3, 2, 1]],  # turned 180 degrees
    4: [[4, 5, 6], [1, 2, 3]],  # mirrored top-bottom
    5: [[1, 4], [2, 5], [3, 6]],  # transposed
    6: [[4, 1], [5, 2], [6, 3]],  # turned 90 degrees clockwise
    7: [[6, 3], [5, 2], [4, 1]],  # transverse
    8: [[3, 6], [2, 5], [1, 4]],  # turned 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_oriented_turns_the_pixels_as_a_viewer_shows_them(orientation):
    stored = torch.tensor(STORED).expand(3, 2, 3)  # [C, H, W], the same in each channel
    shown = oriented(stored, orientation)
    assert shown.tolist() == [SHOWN[orientation]] * 3


def _tagged(path: Path, pixels: np.ndarray, orientation: int | None, **save) -> Path:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **save)
    return path


def _pixels(height=20, width=30) -> np.ndarray:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:4, :6] = 255  # a white patch in the stored top-left corner
    return pixels


@pytest.mark.parametrize("suffix, save", [("png", {}), ("webp", {"lossless": True})])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_header_and_decoded_pixels_follow_the_exif_tag_as_pil_does(
    tmp_path, orientation, suffix, save
):
    """PNG and lossless WebP, so that PIL's exif_transpose is an exact reference (torchvision's
    decoder itself turns no WebP: the turn is ours for every format)."""
    path = _tagged(tmp_path / f"o.{suffix}", _pixels(), orientation, **save)
    header = read_header(path)
    assert header == ImageHeader(30, 20, orientation)
    turned = orientation >= 5
    assert header.size() == ((20, 30) if turned else (30, 20))
    assert header.size(exif_orientation=False) == (30, 20)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    decoded = decode_rgb(path, header.orientation)
    assert np.array_equal(decoded.permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(decode_rgb(path).permute(1, 2, 0).numpy(), _pixels())


def test_a_jpeg_tag_is_read_and_turns_the_decoded_image(tmp_path):
    path = _tagged(tmp_path / "phone.jpg", _pixels(), 6, quality=100)
    header = read_header(path)
    assert header == ImageHeader(30, 20, 6)
    decoded = decode_rgb(path, header.orientation)
    assert decoded.shape == (3, 30, 20)
    # the stored top-left white patch (rows 0-3, columns 0-5) is at the top right when turned
    # 90 degrees clockwise: rows 0-5, columns 16-19
    assert decoded[:, :6, 16:].float().mean() > 240
    assert decoded[:, :6, :14].float().mean() < 200


@pytest.mark.parametrize(
    "exif",
    [
        None,  # no EXIF at all
        b"Exif\x00\x00not a tiff header",  # damaged
        # a valid little-endian TIFF header with one entry: Orientation (SHORT) = 9, no such value
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x09\x00"
        b"\x00\x00\x00\x00\x00\x00",
    ],
)
def test_no_damaged_or_out_of_range_tag_turns_nothing(tmp_path, exif):
    path = tmp_path / "a.jpg"
    Image.fromarray(_pixels()).save(path, **({"exif": exif} if exif else {}))
    assert read_header(path) == ImageHeader(30, 20, 1)


# ---- the dataset ---------------------------------------------------------------------------

CATEGORIES = [{"id": 7, "name": "patch"}]


def _phone_dataset(tmp_path, record_size, exif_orientation, orientation=6):
    """A 20 x 30 (h x w) JPEG stored sideways (EXIF `orientation`), its record of `record_size`
    (w, h) with one box on the white patch where a viewer shows it (turned 90 degrees
    clockwise: x 16..20, y 0..6)."""
    _tagged(tmp_path / "phone.jpg", _pixels(), orientation, quality=100)
    width, height = record_size
    ann = tmp_path / "ann.json"
    coco = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [16, 0, 4, 6]}],
        "categories": CATEGORIES,
    }
    ann.write_text(json.dumps(coco))
    return CocoDetection(
        tmp_path, ann, CategoryMap.from_coco(CATEGORIES), exif_orientation=exif_orientation
    )


def test_the_dataset_reads_a_phone_photo_turned_so_its_box_covers_the_object(tmp_path):
    image, target = _phone_dataset(tmp_path, (20, 30), exif_orientation=True)[0]
    assert image.shape == (3, 30, 20)
    x1, y1, x2, y2 = target["boxes"][0].int().tolist()
    assert image[:, y1:y2, x1:x2].float().mean() > 240  # the white patch, under its box


def test_a_record_of_the_stored_size_is_named_with_the_option_that_reads_it_so(tmp_path):
    with pytest.raises(DataError) as error:
        _phone_dataset(tmp_path, (30, 20), exif_orientation=True)
    message = str(error.value)
    assert "ann.json: image id 1 (phone.jpg)" in message
    assert "image is 20x30 (w x h) but its record says 30x20" in message
    assert "EXIF orientation (6)" in message and "data.exif_orientation=false" in message


def test_stored_orientation_reads_the_pixels_as_stored(tmp_path):
    image, _ = _phone_dataset(tmp_path, (30, 20), exif_orientation=False)[0]
    assert image.shape == (3, 20, 30)
    assert image[:, :4, :6].float().mean() > 240  # the patch where it is stored
    with pytest.raises(DataError, match=r"set data.exif_orientation=true"):
        _phone_dataset(tmp_path, (20, 30), exif_orientation=False)


def test_a_photo_upside_down_keeps_its_size_and_is_read_turned(tmp_path):
    """A 180-degree tag keeps the size, so no check can tell the frames apart: the default
    reads it as viewers (and annotation tools) show it."""
    _tagged(tmp_path / "upside.png", _pixels(), 3)
    ann = tmp_path / "ann.json"
    records = [{"id": 1, "file_name": "upside.png", "width": 30, "height": 20}]
    ann.write_text(json.dumps({"images": records, "annotations": [], "categories": CATEGORIES}))
    image, _ = CocoDetection(tmp_path, ann, CategoryMap.from_coco(CATEGORIES))[0]
    assert image[:, 16:, 24:].float().mean() > 240  # stored top-left, shown bottom-right
    assert np.array_equal(image.permute(1, 2, 0).numpy(), _pixels()[::-1, ::-1])


def test_the_data_config_carries_the_option_to_the_datasets(tmp_path):
    from hydra.utils import instantiate

    _tagged(tmp_path / "phone.jpg", _pixels(), 6, quality=100)
    ann = tmp_path / "ann.json"
    coco = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": 30, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 6, 4]}],
        "categories": CATEGORIES,
    }
    ann.write_text(json.dumps(coco))
    loader = OmegaConf.load(Path(__file__).parents[1] / "conf/data/loader/default.yaml")
    assert loader.exif_orientation is True
    loader.seed = 0
    splits = {"_target_": "labelmatch.data.coco.CocoSplits", "image_dir": str(tmp_path),
              "labeled_json": str(ann), "unlabeled_json": None, "val_json": str(ann)}  # fmt: skip
    for value, expected in ((False, (3, 20, 30)), (True, None)):
        module = instantiate(
            {"_target_": "labelmatch.data.datamodule.DetectionDataModule",
             **OmegaConf.to_container(loader), "exif_orientation": value, "test_scale": 32,
             "max_size": 64, "train_scales": [32], "weak_scales": [32], "strong_scales": [32],
             "splits": splits, "use_unlabeled": False},
        )  # fmt: skip
        if expected is None:  # the stored-size record against the turned image
            with pytest.raises(DataError, match="data.exif_orientation=false"):
                module.setup("fit")
            continue
        module.setup("fit")
        assert module.val_dataset.with_transforms(None)[0][0].shape == expected


# ---- predict and prepare ---------------------------------------------------------------------


def test_predict_reads_the_turned_image_and_its_size(tmp_path):
    from labelmatch.data.transforms import TestTransform
    from labelmatch.predict import image_view, same_size_batches

    wide = _tagged(tmp_path / "a.jpg", _pixels(20, 30), 1, quality=100)
    phone = _tagged(tmp_path / "b.jpg", _pixels(20, 30), 8, quality=100)
    transform = TestTransform(20, 100)
    # turned, the phone photo is 20 wide and 30 high: another view size than the wide one
    assert len(same_size_batches([wide, phone], transform, 4)) == 2
    assert len(same_size_batches([wide, phone], transform, 4, exif_orientation=False)) == 1
    image, view, _ = image_view(phone, transform, 2)
    assert image.shape == (3, 30, 20) and view.shape == (3, 30, 20)
    assert image[:, 24:, :4].float().mean() > 240  # stored top-left, shown bottom-left
    assert image_view(phone, transform, 2, exif_orientation=False)[0].shape == (3, 20, 30)


def test_predict_views_a_16_bit_png_as_evaluation_does_and_draws_it_in_8_bits(tmp_path):
    """Until 2026-12-06 predict made the view from the 8-bit picture, so a 16-bit PNG's view
    differed from evaluation's (up to 0.0063 on a grey ramp): other detections than `evaluate`
    gives the same image."""
    from labelmatch.data.transforms import TestTransform
    from labelmatch.predict import image_view

    ramp = (np.arange(40 * 60, dtype=np.uint32).reshape(40, 60) * 27).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)  # mode I;16
    transform = TestTransform(30, 100)
    image, view, _ = image_view(path, transform, 1)
    decoded = decode_rgb(path)
    assert decoded.dtype == torch.uint16
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(40, 60))
    no_boxes = {"boxes": boxes, "labels": torch.zeros(0), "image_id": 1}
    assert torch.equal(view, transform(decoded, no_boxes)[0])
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 60)


def test_predict_takes_the_option_from_the_command_then_the_training_run(tmp_path):
    from labelmatch.checkpoints import training_config, training_reading
    from labelmatch.predict import reads_exif_orientation

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    checkpoint = run / "checkpoints" / "last.ckpt"

    def given(value, trained_data, saved=None):
        (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml({"data": trained_data}))
        cfg = OmegaConf.create({"checkpoint": str(checkpoint), "exif_orientation": value})
        state = {"DetectionDataModule": {"evaluation_view": saved}} if saved else {}
        return reads_exif_orientation(cfg, training_reading(state, training_config(checkpoint)))

    assert given(None, {"exif_orientation": False}) is False
    assert given(None, {"test_scale": 128}) is True  # a run from before the option
    assert given(True, {"exif_orientation": False}) is True
    assert given(False, {"exif_orientation": True}) is False
    # what the checkpoint saved (the run's own reading) comes before the run directory's file
    assert given(None, {"exif_orientation": True}, {"exif_orientation": False}) is False


def test_prepare_folder_writes_the_sizes_the_loaders_read(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _tagged(images / "phone.jpg", _pixels(20, 30), 6, quality=95)
    _tagged(images / "plain.png", _pixels(20, 30), None)

    def sizes(*flags):
        out = tmp_path / f"unlabeled{len(flags)}.json"
        subprocess.run(
            [sys.executable, "-m", "labelmatch.prepare", "folder", "--images", str(images),
             "--out", str(out), *flags],
            check=True, capture_output=True,
        )  # fmt: skip
        records = json.loads(out.read_text())["images"]
        return {record["file_name"]: (record["width"], record["height"]) for record in records}

    assert sizes() == {"phone.jpg": (20, 30), "plain.png": (30, 20)}
    assert sizes("--stored-orientation") == {"phone.jpg": (30, 20), "plain.png": (30, 20)}


def test_truncations_of_an_animated_gif_read_or_fail_as_a_header_error(tmp_path):
    """A partly downloaded animated GIF (cut at every 5th length): PIL's frame count raised
    IndexError or struct.error, which no loader catches, so `prepare folder` and the datasets
    stopped with a traceback instead of skipping or naming the file (until 2026-12-06)."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 60), dtype=np.uint8)) for _ in range(3)]
    whole = tmp_path / "anim.gif"
    frames[0].save(whole, save_all=True, append_images=frames[1:])
    data, cut = whole.read_bytes(), tmp_path / "cut.gif"
    outcomes = set()
    for length in range(1, len(data), 5):
        cut.write_bytes(data[:length])
        try:
            read_header(cut)
        except HEADER_ERRORS as error:
            outcomes.add("frames" if "frames cannot be counted" in str(error) else "other")
        else:
            outcomes.add("read")
    assert "frames" in outcomes  # the lengths that raised IndexError / struct.error before
