"""View sizes derived from a dataset's own images (data=coco with its scale keys null)."""

from __future__ import annotations

import json
import logging

import pytest

from labelmatch.data.coco import CocoSplits
from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.errors import DataError
from labelmatch.data.scales import DatasetScales, resolve_scales, scales_for_images
from labelmatch.instantiate import instantiate_datamodule
from tests.conftest import compose_config


def test_small_images_keep_their_size_with_the_digits_proportions():
    assert scales_for_images([(128, 128)] * 3) == DatasetScales(
        train_scales=(96, 112, 128, 144, 160),
        weak_scales=(112, 128, 144),
        strong_scales=(96, 112, 128, 144, 160),
        test_scale=128,
        max_size=213,  # 128 x 1333 / 800
    )


def test_the_median_short_side_decides_and_large_images_stop_at_the_paper_sizes():
    photos = [
        (640, 480),
        (480, 640),
        (500, 375),
        (800, 600),
        (1000, 100),
    ]  # short sides: median 480
    assert scales_for_images(photos).test_scale == 480
    assert scales_for_images(photos).train_scales == (360, 420, 480, 540, 600)
    large = scales_for_images([(4000, 3000)] * 2)
    assert (large.test_scale, large.max_size) == (800, 1333)  # the paper's, never above
    assert large.train_scales == (600, 700, 800, 900, 1000)


def test_given_keys_win_and_absent_keys_stay_absent(caplog):
    images = [{"id": 1, "width": 128, "height": 96}, {"id": 2, "width": 0, "height": 96}]
    keys = {"train_scales": [64], "weak_scales": None, "test_scale": None, "max_size": 300}
    with caplog.at_level(logging.INFO, logger="labelmatch.data.scales"):
        resolved = resolve_scales(keys, images, "labeled.json")
    assert resolved == {
        "train_scales": [64],
        "weak_scales": (84, 96, 108),
        "test_scale": 96,
        "max_size": 300,
    }
    assert "view sizes from labeled.json (median short side 96 px of 1 images)" in caplog.text
    assert "weak_scales, test_scale derived" in caplog.text
    assert resolve_scales({"test_scale": 64}, [], "x.json") == {"test_scale": 64}


@pytest.mark.parametrize("given", [800, "rule"], ids=["one short side", "a resize rule"])
def test_one_short_side_or_a_rule_beside_derived_keys(given, caplog):
    """data=coco leaves the other scale keys null: `data.train_scales=800` or the paper's rule
    beside them crashed the log line (list() of an int or a rule). Review, 2026-12-04."""
    from labelmatch.data.transforms import LongSideRatio

    scales = LongSideRatio(1024, (0.5, 1.5)) if given == "rule" else given
    keys = {"train_scales": scales, "strong_scales": scales, "weak_scales": None,
            "test_scale": None, "max_size": None}  # fmt: skip
    images = [{"id": 1, "width": 640, "height": 480}]
    with caplog.at_level(logging.INFO, logger="labelmatch.data.scales"):
        resolved = resolve_scales(keys, images, "x.json")
    assert resolved["train_scales"] is scales and resolved["test_scale"] == 480
    assert f"train/strong short sides {scales}" in caplog.text


def test_short_sides_given_by_hand_are_not_capped_by_a_derived_long_side():
    """Until 2026-12-06 the derived long side followed the images alone: 640 x 480 images gave
    800, so data.train_scales=[480, ..., 800] (coco.yaml's own suggestion) trained at short
    sides up to 600 and tested at 600 instead of 800, without a word."""
    images = [{"id": 1, "width": 640, "height": 480}]
    keys = {"train_scales": [480, 544, 608, 672, 736, 800], "weak_scales": None,
            "strong_scales": None, "test_scale": 800, "max_size": None}  # fmt: skip
    assert resolve_scales(keys, images, "x.json")["max_size"] == 1333  # 800 x 1333 / 800
    # A given rule sizes its views itself; derived sizes keep their own long side.
    assert (
        resolve_scales({**keys, "train_scales": None, "test_scale": None}, images, "x.json")[
            "max_size"
        ]
        == scales_for_images([(640, 480)]).max_size
    )


def test_no_usable_image_size_is_a_clear_error_naming_the_file():
    with pytest.raises(DataError, match="labeled.json: no image record with a positive integer"):
        resolve_scales({"test_scale": None}, [{"id": 1, "width": "wide"}], "labeled.json")
    # Sizes written as JSON floats (640.0), which the dataset itself accepts, count too.
    keys = {"train_scales": None, "weak_scales": None, "strong_scales": None}
    keys |= {"test_scale": None, "max_size": None}
    resolved = resolve_scales(keys, [{"id": 1, "width": 640.0, "height": 480.0}], "labeled.json")
    assert resolved["test_scale"] == 480


def _coco(tmp_path, width: int, height: int) -> str:
    path = tmp_path / "labeled.json"
    images = [{"id": i, "file_name": f"{i}.png", "width": width, "height": height} for i in (1, 2)]
    categories = [{"id": 1, "name": "thing"}]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    return str(path)


def test_data_coco_derives_every_null_size_from_the_labeled_json(tmp_path):
    labeled = _coco(tmp_path, 200, 150)
    cfg = compose_config(
        ["data=coco", f"data.splits.image_dir={tmp_path}", f"data.splits.labeled_json={labeled}",
         f"data.splits.val_json={labeled}", "data.num_workers=0"]
    )  # fmt: skip
    datamodule = instantiate_datamodule(cfg.data)
    assert datamodule.view_sizes["test_scale"] == 150
    assert datamodule.view_sizes["train_scales"] == (112, 131, 150, 169, 188)
    assert datamodule.test_transform.scale == 150 and datamodule.test_transform.max_size == 250
    # The paper's sizes stay with the paper's data configs.
    assert compose_config(["data=coco_standard", "data.splits.root=/coco"]).data.test_scale == 800


def test_bad_labeled_json_surfaces_as_itself_not_inside_hydras_error(tmp_path):
    broken = tmp_path / "labeled.json"
    broken.write_text("{not json")
    cfg = compose_config(
        ["data=coco", f"data.splits.image_dir={tmp_path}", f"data.splits.labeled_json={broken}",
         f"data.splits.val_json={broken}"]
    )  # fmt: skip
    with pytest.raises(DataError, match="labeled.json"):
        instantiate_datamodule(cfg.data)
    # Direct calls with every size given read nothing at build time.
    module = DetectionDataModule(
        CocoSplits(tmp_path, broken, None, broken), train_scales=[64], weak_scales=[64],
        strong_scales=[64], test_scale=64, max_size=128,
    )  # fmt: skip
    assert module.view_sizes["test_scale"] == 64
