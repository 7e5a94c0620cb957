"""CategoryMap and CocoDetection: round trips, validation of every bad-input case, samples."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from labelmatch.data.categories import CategoryMap
from labelmatch.data.coco import CocoDetection, load_coco_json, report_table
from labelmatch.data.errors import DataError
from labelmatch.method.act import act_thresholds, class_prior_from_counts

CATEGORIES = [
    {"id": 90, "name": "toothbrush"},
    {"id": 1, "name": "person"},
    {"id": 3, "name": "car"},
]


# ---- CategoryMap -------------------------------------------------------------------------


def test_category_map_round_trips_non_contiguous_ids():
    categories = CategoryMap.from_coco(CATEGORIES)
    assert categories.num_classes == 3
    assert categories.category_ids == [1, 3, 90]
    assert categories.names == ["person", "car", "toothbrush"]
    assert [categories.to_label(i) for i in (1, 3, 90)] == [1, 2, 3]
    assert [categories.to_category_id(label) for label in (1, 2, 3)] == [1, 3, 90]
    labels = torch.tensor([3, 1, 2, 2])
    assert categories.labels_to_category_ids(labels).tolist() == [90, 1, 3, 3]
    assert categories.labels_to_category_ids(torch.zeros(0, dtype=torch.int64)).shape == (0,)


def test_category_map_rejects_unknown_ids_and_labels_clearly():
    categories = CategoryMap.from_coco(CATEGORIES)
    with pytest.raises(KeyError, match=r"category id 2 is not in .*\[1, 3, 90\]") as error:
        categories.to_label(2)
    assert isinstance(error.value, DataError)
    with pytest.raises(DataError, match="label 0 is outside the model labels 1..3"):
        categories.to_category_id(0)
    with pytest.raises(DataError, match="1..3"):
        categories.labels_to_category_ids(torch.tensor([1, 4]))
    with pytest.raises(DataError, match="duplicate category ids"):
        CategoryMap.from_coco([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])


# ---- a tiny COCO dataset on disk ---------------------------------------------------------


def _write_png(path: Path, height: int, width: int) -> None:
    pixels = np.full((height, width, 3), 200, dtype=np.uint8)
    pixels[10:20, 5:15] = (10, 20, 30)  # a dark object at x 5..15, y 10..20
    Image.fromarray(pixels).save(path)


def _annotation(annotation_id, image_id, bbox, category_id=3):
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": bbox}


@pytest.fixture
def tiny(tmp_path):
    """(image dir, json writer): images 1 (40x60, h x w) and 2 (30x30) exist on disk."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    _write_png(image_dir / "a.png", 40, 60)
    _write_png(image_dir / "b.png", 30, 30)

    def write(annotations, images=None, name="ann.json"):
        images = images or [
            {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 2, "file_name": "b.png", "height": 30, "width": 30},
        ]
        path = tmp_path / name
        path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
        )
        return path

    return image_dir, write


def _dataset(image_dir, ann_file, **kwargs):
    return CocoDetection(image_dir, ann_file, CategoryMap.from_coco(CATEGORIES), **kwargs)


def test_sample_format_and_contiguous_labels(tiny):
    image_dir, write = tiny
    ann_file = write([_annotation(7, 1, [5, 10, 10, 10], 90), _annotation(8, 1, [0, 0, 4, 4], 1)])
    dataset = _dataset(image_dir, ann_file)
    assert len(dataset) == 2 and dataset.image_ids == [1, 2]
    image, target = dataset[0]
    assert isinstance(image, tv_tensors.Image)
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 60)
    assert image[:, 15, 10].tolist() == [10, 20, 30]  # RGB order, inside the drawn object
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and boxes.dtype == torch.float32
    assert tuple(boxes.canvas_size) == (40, 60)
    assert boxes.tolist() == [[5, 10, 15, 20], [0, 0, 4, 4]]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [3, 1]
    assert target["image_id"] == 1
    # Image 2 has no annotation: a valid background image.
    _, background = dataset[1]
    assert background["boxes"].shape == (0, 4) and background["labels"].shape == (0,)
    assert dataset.report["background_images"] == 1
    assert dataset.class_counts == [1, 0, 1]


def test_transforms_receive_image_and_target(tiny):
    image_dir, write = tiny
    dataset = _dataset(image_dir, write([]), transforms=lambda image, target: target["image_id"])
    assert [dataset[0], dataset[1]] == [1, 2]
    assert dataset.with_transforms(None)[0][1]["image_id"] == 1
    assert dataset[0] == 1  # with_transforms leaves the original alone


def test_bad_boxes_are_clipped_or_rejected_and_counted(tiny, caplog):
    image_dir, write = tiny
    annotations = [
        _annotation(1, 1, [5, 10, 10, 10]),  # fine
        _annotation(2, 1, [50, 30, 20, 20]),  # partly outside the 60x40 image: clipped
        _annotation(3, 1, [-5, -5, 10, 10]),  # partly outside at the origin: clipped
        _annotation(4, 1, [5, 5, 0, 10]),  # zero width: rejected
        _annotation(5, 1, [5, 5, 10, -1]),  # negative height: rejected
        _annotation(6, 1, [61, 5, 10, 10]),  # entirely right of the image: rejected
        _annotation(7, 2, [0, 30, 10, 10]),  # touches the bottom edge only: rejected
        {**_annotation(8, 2, [1, 1, 5, 5]), "iscrowd": 1},  # crowd: not a target
        _annotation(9, 1, [5, 5, 0.5, 10]),  # under 1 px wide (MMDetection's rule): rejected
        # A sliver at the right edge: 60 - 1e-7 .. 60, no width once stored in float32
        _annotation(10, 1, [60 - 1e-7, 5, 10, 10]),
        # Under 1 px left inside the 30x30 image: rejected (a 1e-5 px sliver at the left edge
        # once kept, and a flip or resize gave it no width in the view: training stopped).
        _annotation(11, 2, [-3, 5, 3.00001, 10]),
        _annotation(12, 2, [29.5, 5, 10, 10]),
        _annotation(13, 2, [29, 5, 10, 10]),  # 1 px inside: kept, clipped
        # 1 px wide at a fractional x, wholly inside: kept (0.99999994 wide in float32).
        _annotation(14, 2, [0.3, 10, 1.0, 5]),
    ]
    with caplog.at_level(logging.INFO, logger="labelmatch.data.coco"):
        dataset = _dataset(image_dir, write(annotations))
    report = dataset.report
    assert (report["annotations"], report["boxes"], report["clipped"]) == (14, 5, 3)
    assert (report["rejected_degenerate"], report["rejected_outside"], report["crowd"]) == (3, 5, 1)
    assert dataset[0][1]["boxes"].tolist() == [[5, 10, 15, 20], [50, 30, 60, 40], [0, 0, 5, 5]]
    kept = torch.tensor([[29, 5, 30, 15], [0.3, 10, 1.3, 15]])
    torch.testing.assert_close(dataset[1][1]["boxes"], kept)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "clipped" in warnings[0] and "rejected_outside" in warnings[0]
    # ... naming up to three of each kind
    assert (
        "rejected_degenerate: annotation id 4 (image id 1) bbox [5, 5, 0, 10], annotation id 5 "
        "(image id 1) bbox [5, 5, 10, -1], annotation id 9 (image id 1) bbox [5, 5, 0.5, 10]"
    ) in warnings[0]
    assert "rejected_outside: annotation id 6 (image id 1) bbox [61, 5, 10, 10]" in warnings[0]
    assert "and 2 more" in warnings[0] and "annotation id 8 " not in warnings[0]  # crowd
    # The class prior counts all 14 annotations (all car), as the official hook counts the
    # labeled json; the training boxes are the 5 kept ones.
    assert dataset.class_counts == [0, 5, 0] and dataset.prior_counts == [0, 14, 0]
    assert report["prior_boxes"] == 14


@pytest.mark.parametrize(
    ("bbox", "flip_prob"),
    [([-3.0, 100.0, 3.00001, 50.0], 1.0), ([999.99995, 100.0, 5.0, 50.0], 0.0)],
    ids=["left-edge sliver, flipped", "right-edge sliver, resized"],
)
def test_every_kept_box_keeps_a_positive_size_in_the_training_view(tmp_path, bbox, flip_prob):
    """End to end, reader and training transform: a sliver kept by the reader collapsed to
    no width in the view (W - 1e-5 == W in float32; a resize to short side 123) and stopped
    training at torchvision's check. Found by review, 2026-12-04."""
    from labelmatch.data.transforms import LabeledTransform, ShortSideChoice

    _write_png(tmp_path / "a.png", 480, 1000)
    images = [{"id": 1, "file_name": "a.png", "width": 1000, "height": 480}]
    coco = {"images": images, "annotations": [_annotation(1, 1, bbox)], "categories": CATEGORIES}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    dataset = _dataset(tmp_path, tmp_path / "a.json")
    transform = LabeledTransform(ShortSideChoice([123], 10_000), flip_prob, photometric=False)
    _, target = transform(*dataset[0])
    boxes = target["boxes"]
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all(), boxes.tolist()


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.json: annotation file does not exist"):
        load_coco_json(tmp_path / "nowhere.json")


def test_truncated_json_names_the_file_and_position(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"images": [{"id": 1, "file_na')
    with pytest.raises(DataError, match=r"cut\.json: invalid JSON at line 1 column \d+"):
        load_coco_json(path)


@pytest.mark.parametrize(
    "category",
    [{"id": 1.2, "name": "a"}, {"id": "10", "name": "a"}, {"id": True, "name": "a"}, ["a"]],
)
def test_a_category_without_an_integer_id_names_the_file_and_entry(tmp_path, category):
    path = tmp_path / "ann.json"
    categories = [{"id": 1, "name": "person"}, category]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    with pytest.raises(DataError, match=r"ann\.json: category entry 1 needs an integer 'id'"):
        load_coco_json(path)


def test_a_repeated_category_id_names_the_file_and_both_entries(tmp_path):
    """Until 2026-12-06 the error came from the category map, without the file or the entries;
    `prepare split` wrote such a json's split."""
    path = tmp_path / "ann.json"
    categories = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 3, "name": "c"}]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    with pytest.raises(
        DataError, match=r"ann\.json: category id 3 appears twice \(entries 0 and 2\)"
    ):
        load_coco_json(path)


def test_json_true_is_no_integer_id(tiny):
    """Python's bool is an int: `true` stood for id 1 (an image id true was image 1's twin, an
    annotation of image_id true was one of image 1's boxes)."""
    image_dir, write = tiny
    images = [{"id": True, "file_name": "a.png", "height": 40, "width": 60}]
    with pytest.raises(DataError, match=r"image entry 0 has no integer id"):
        _dataset(image_dir, write([], images=images))
    with pytest.raises(DataError, match=r"annotation id 5: image_id True is not in 'images'"):
        _dataset(image_dir, write([_annotation(5, True, [1, 1, 5, 5])]))
    with pytest.raises(DataError, match=r"annotation without integer 'id'"):
        _dataset(image_dir, write([_annotation(True, 1, [1, 1, 5, 5])]))


def test_missing_required_keys(tmp_path):
    path = tmp_path / "no_images.json"
    path.write_text(json.dumps({"annotations": [], "categories": []}))
    with pytest.raises(DataError, match=r"no_images\.json: missing required key 'images'"):
        load_coco_json(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="missing required key 'categories'"):
        load_coco_json(path)
    assert load_coco_json(path, require_categories=False) == {"images": []}


def test_unknown_category_names_file_and_annotation(tiny):
    image_dir, write = tiny
    ann_file = write([_annotation(1, 1, [5, 10, 10, 10]), _annotation(42, 2, [1, 1, 5, 5], 2)])
    with pytest.raises(DataError, match=r"ann\.json: annotation id 42 \(image id 2\): unknown"):
        _dataset(image_dir, ann_file)


def test_annotation_of_unknown_image_and_malformed_bbox(tiny):
    image_dir, write = tiny
    with pytest.raises(DataError, match=r"annotation id 5: image_id 99 is not in 'images'"):
        _dataset(image_dir, write([_annotation(5, 99, [1, 1, 5, 5])]))
    with pytest.raises(DataError, match=r"annotation id 6 \(image id 1\): bbox must be 4 finite"):
        _dataset(image_dir, write([_annotation(6, 1, [1, 1, 5])]))
    no_box = {"id": 7, "image_id": 1, "category_id": 3}
    with pytest.raises(DataError, match=r"annotation id 7 \(image id 1\): has no 'bbox'$"):
        _dataset(image_dir, write([no_box]))


def test_missing_image_file_is_an_error_or_a_counted_skip(tiny):
    image_dir, write = tiny
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 3, "file_name": "gone.png", "height": 30, "width": 30},
    ]
    ann_file = write([_annotation(1, 3, [1, 1, 5, 5])], images=images)
    with pytest.raises(DataError, match=r"image id 3 \(gone\.png\): image file .*gone\.png"):
        _dataset(image_dir, ann_file)
    dataset = _dataset(image_dir, ann_file, skip_invalid=True)
    assert dataset.image_ids == [1]
    assert dataset.report["images_skipped_missing"] == 1 and dataset.report["boxes"] == 0


def test_image_record_without_size(tiny):
    image_dir, write = tiny
    images = [{"id": 4, "file_name": "a.png", "height": 40}]
    with pytest.raises(DataError, match=r"image id 4 \(a\.png\): needs positive integer 'width'"):
        _dataset(image_dir, write([], images=images))


def test_corrupt_image_is_an_error_or_a_counted_skip_before_training(tiny, caplog):
    image_dir, write = tiny
    (image_dir / "b.png").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"image id 2 \(b\.png\): cannot read image file .*b\.png"):
        _dataset(image_dir, write([]))
    with caplog.at_level(logging.WARNING, logger="labelmatch.data.coco"):
        skipping = _dataset(image_dir, write([_annotation(1, 2, [1, 1, 5, 5])]), skip_invalid=True)
    assert skipping.image_ids == [1] and skipping.report["images_skipped_unreadable"] == 1
    assert any("b.png" in r.getMessage() for r in caplog.records)


def test_an_image_format_the_loaders_cannot_decode_is_an_error_before_training(tiny):
    """PIL identifies BMP (and TIFF, ...), torchvision's decode_image does not read it: the
    header check rejects it up front instead of the first batch that draws it."""
    image_dir, write = tiny
    Image.new("RGB", (30, 30)).save(image_dir / "b.png", format="BMP")  # a BMP named .png
    with pytest.raises(DataError, match=r"b\.png.*BMP files cannot be decoded for training"):
        _dataset(image_dir, write([]))


def test_an_animated_gif_is_an_error_and_a_camera_jpeg_mpo_is_read(tiny):
    """decode_image returns every frame of an animated GIF ([frames, 3, H, W]): refused up
    front. PIL calls a JPEG with embedded previews (many phone cameras) MPO; decode_image reads
    its first image, so it is accepted."""
    image_dir, write = tiny
    frames = [Image.new("RGB", (30, 30), colour) for colour in ("red", "blue")]
    frames[0].save(image_dir / "b.png", format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match=r"b\.png.*an animated GIF of 2 frames"):
        _dataset(image_dir, write([]))

    frames[0].save(image_dir / "b.png", format="MPO", save_all=True, append_images=frames[1:])
    with Image.open(image_dir / "b.png") as written:
        assert written.format == "MPO"
    image, _ = _dataset(image_dir, write([]))[1]
    assert image.shape == (3, 30, 30)


def test_image_damaged_past_its_header_fails_when_read(tiny, caplog):
    image_dir, write = tiny
    intact = (image_dir / "b.png").read_bytes()
    (image_dir / "b.png").write_bytes(intact[: len(intact) // 2])  # header intact, data cut
    dataset = _dataset(image_dir, write([]))
    dataset[0]  # the intact image reads fine
    with pytest.raises(DataError, match=r"b\.png \(image id 2, .*ann\.json\): cannot read"):
        dataset[1]
    skipping = _dataset(image_dir, write([]), skip_invalid=True)
    with caplog.at_level(logging.WARNING, logger="labelmatch.data.coco"):
        assert skipping[1] is None
    assert skipping.report["images_skipped_unreadable"] == 1
    assert any("b.png" in r.getMessage() for r in caplog.records)


def test_image_whose_size_differs_from_its_record(tiny):
    image_dir, write = tiny
    images = [{"id": 1, "file_name": "a.png", "height": 60, "width": 40}]  # really 40 x 60
    with pytest.raises(DataError, match=r"image id 1 \(a\.png\): image is 60x40 \(w x h\)"):
        _dataset(image_dir, write([], images=images))
    skipping = _dataset(image_dir, write([], images=images), skip_invalid=True)
    assert len(skipping) == 0 and skipping.report["images_skipped_unreadable"] == 1


def test_skip_invalid_drops_the_image_of_a_bad_annotation_and_counts_it(tiny, caplog):
    image_dir, write = tiny
    annotations = [
        _annotation(1, 1, [5, 10, 10, 10]),
        _annotation(2, 2, [1, 1, 5, 5], category_id=7),  # unknown category: image 2 dropped
        _annotation(3, 1, [1, 1, 5, 5]),
        _annotation(4, 99, [1, 1, 5, 5]),  # unknown image: the annotation alone is dropped
    ]
    with caplog.at_level(logging.WARNING, logger="labelmatch.data.coco"):
        dataset = _dataset(image_dir, write(annotations), skip_invalid=True)
    assert dataset.image_ids == [1] and dataset.report["boxes"] == 2
    assert dataset.report["images_skipped_bad_annotation"] == 1
    assert dataset.report["annotations_skipped_invalid"] == 1
    # The boxes of a dropped image count nowhere else, whatever they are (crowd, clipped, ...).
    dropped_image_boxes = [
        {**_annotation(5, 2, [1, 1, 5, 5]), "iscrowd": 1},
        _annotation(6, 2, [25, 25, 10, 10]),  # would be clipped
        _annotation(7, 2, [1, 1, 0.5, 5]),  # would be rejected as degenerate
    ]
    report = _dataset(image_dir, write(annotations + dropped_image_boxes), skip_invalid=True).report
    assert [report[key] for key in ("crowd", "clipped", "rejected_degenerate", "boxes")] == [
        0,
        0,
        0,
        2,
    ]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "annotation id 2 (image id 2): unknown category_id 7" in messages
    assert "annotation id 4: image_id 99" in messages
    annotations[1]["bbox"] = [1, 1, float("nan"), 5]  # malformed box: also the whole image
    annotations[1]["category_id"] = 3
    assert _dataset(image_dir, write(annotations), skip_invalid=True).image_ids == [1]


def test_class_prior_counts_crowd_boxes_as_the_official_hook(tiny, caplog):
    """Official LabelMatchHook.get_data_info: n_c = every annotation of class c in the labeled
    json (crowd included), boxes per image = their sum / images (docs/method.md §2)."""
    image_dir, write = tiny
    annotations = [
        _annotation(1, 1, [5, 10, 10, 10], category_id=1),
        _annotation(2, 1, [20, 10, 10, 10], category_id=3),
        {**_annotation(3, 1, [1, 1, 30, 30], category_id=3), "iscrowd": 1},
        {**_annotation(4, 2, [1, 1, 30, 30], category_id=3), "iscrowd": 1},
        {**_annotation(5, 2, [1, 1, 5, 5], category_id=1), "iscrowd": 1},
        {**_annotation(6, 2, [9, 9, 5, 5], category_id=1), "ignore": 1},  # as MMDetection: out
    ]
    dataset = _dataset(image_dir, write(annotations))
    # Labels: person (id 1), car (id 3), toothbrush (id 90).
    assert dataset.class_counts == [1, 1, 0]  # training targets: the two non-crowd boxes
    assert dataset.prior_counts == [3, 3, 0]
    assert (dataset.report["crowd"], dataset.report["prior_boxes"]) == (4, 6)
    # Toothbrush has no box and counts as 1 (official rule): n = [3, 3, 1], 7 boxes, 2 images.
    prior = class_prior_from_counts(dataset.prior_counts, len(dataset))
    expected = torch.tensor([3 / 7, 3 / 7, 1 / 7], dtype=torch.float64)
    torch.testing.assert_close(prior.class_ratios, expected)
    assert prior.boxes_per_image == pytest.approx(7 / 2)


def test_a_class_absent_from_the_labeled_set_still_gets_act_thresholds(tiny):
    image_dir, write = tiny
    dataset = _dataset(image_dir, write([_annotation(1, 1, [5, 10, 10, 10], category_id=1)]))
    assert dataset.class_counts == [1, 0, 0]  # car and toothbrush have no labeled box
    prior = class_prior_from_counts(dataset.class_counts, len(dataset))
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.7, 0.4]), torch.zeros(0)]
    reliable, uncertain = act_thresholds(scores, num_images=4, prior=prior, alpha=0.2)
    assert torch.isfinite(reliable).all() and torch.isfinite(uncertain).all()
    assert (uncertain >= 0.05).all() and (reliable >= uncertain).all()


def test_the_report_table_has_a_row_per_split_with_summed_columns():
    report = dict.fromkeys(
        ["images", "background_images", "boxes", "crowd", "prior_boxes", "clipped",
         "rejected_degenerate", "rejected_outside", "annotations_skipped_invalid",
         "images_skipped_missing", "images_skipped_unreadable", "images_skipped_bad_annotation"],
        0,
    )  # fmt: skip
    labeled = {**report, "file": "a/labeled.json", "images": 16, "boxes": 59, "crowd": 2,
               "prior_boxes": 61}  # fmt: skip
    val = {**report, "file": "a/val.json", "images": 7, "rejected_outside": 2,
           "rejected_degenerate": 1, "images_skipped_unreadable": 3}  # fmt: skip
    lines = report_table({"labeled": labeled, "val": val}).splitlines()
    assert lines[0].split() == [
        "split", "images", "no", "box", "boxes", "crowd", "prior", "boxes", "clipped", "boxes",
        "dropped", "images", "skipped", "file",
    ]  # fmt: skip
    assert lines[1].split() == [
        "labeled", "16", "0", "59", "2", "61", "0", "0", "0", "a/labeled.json",
    ]  # fmt: skip
    assert lines[2].split() == ["val", "7", "0", "0", "0", "0", "0", "3", "3", "a/val.json"]
    assert len({line.index("a/") for line in lines[1:]}) == 1  # columns line up
