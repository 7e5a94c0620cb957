"""COCO evaluation: results conversion, AP values checked by hand and against COCOeval run
directly on the written results file, the empty case, and per-class AP."""

import contextlib
import io
import json
import logging
import os

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from labelmatch.evaluation.coco_eval import (
    STAT_INDEX,
    evaluate_coco,
    to_coco_results,
    write_results,
)

# Non-contiguous category ids, listed out of order; "three" has no ground-truth box.
CATEGORIES = [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three"}]
# Ground truth (xywh): one small, one medium and one large "one"/"seven" so that every area
# range of COCOeval has ground truth.
GT_BOXES = {
    "A": (10, "one", [10, 10, 20, 20]),  # area 400: small
    "B": (11, "one", [5, 5, 60, 60]),  # area 3600: medium
    "C": (10, "seven", [50, 50, 120, 120]),  # area 14400: large
    "D": (12, "seven", [20, 20, 30, 30]),  # area 900: small
}
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}


@pytest.fixture
def gt_json(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in (10, 11, 12)]
    annotations = [
        {
            "id": n,
            "image_id": image_id,
            "category_id": CATEGORY_ID[name],
            "bbox": box,
            "area": box[2] * box[3],
            "iscrowd": 0,
        }
        for n, (image_id, name, box) in enumerate(GT_BOXES.values(), start=1)
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=CATEGORIES)))
    return path


def _result(image_id: int, name: str, box: list[float], score: float) -> dict:
    return dict(image_id=image_id, category_id=CATEGORY_ID[name], bbox=box, score=score)


def _perfect_results() -> list[dict]:
    return [_result(image_id, name, box, 0.9) for image_id, name, box in GT_BOXES.values()]


def _results_with_false_positives() -> list[dict]:
    """Class "one" (2 GT boxes, A and B) ranked: FP 0.9, TP 0.8, FP 0.7, FP 0.6, TP 0.5.

    Precision/recall after each: (0, 0), (1/2, 1/2), (1/3, 1/2), (1/4, 1/2), (2/5, 1).
    Interpolated precision (max over recall >= r): 1/2 for r <= 0.5 (51 of the 101 recall
    points 0, 0.01, ..., 1), 2/5 for r > 0.5 (50 points). TPs are exact, so every IoU
    threshold gives AP = (51 * 1/2 + 50 * 2/5) / 101 = 45.5 / 101.
    """
    _, _, box_a = GT_BOXES["A"]
    _, _, box_b = GT_BOXES["B"]
    return [
        _result(12, "one", [100, 100, 30, 30], 0.9),  # no "one" on image 12
        _result(10, "one", box_a, 0.8),
        _result(10, "one", [150, 150, 20, 20], 0.7),  # far from A
        _result(11, "one", [120, 120, 40, 40], 0.6),  # far from B
        _result(11, "one", box_b, 0.5),
        *(
            _result(image_id, "seven", box, 0.9)
            for image_id, name, box in [GT_BOXES["C"], GT_BOXES["D"]]
        ),
    ]


def _cocoeval_stats(gt_path, results_path) -> tuple[list[float], COCOeval]:
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_path))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(results_path)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats], evaluator


def test_to_coco_results_converts_boxes_and_maps_labels_to_category_ids():
    predictions = [
        dict(
            image_id=torch.tensor(10),
            boxes=torch.tensor([[10.0, 20.0, 40.0, 35.5], [0.0, 0.0, 1.234567, 2.0]]),
            scores=torch.tensor([0.9, 0.25]),
            labels=torch.tensor([1, 3]),
        ),
        dict(
            image_id=11,
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            labels=torch.zeros(0, dtype=torch.int64),
        ),
    ]
    results = to_coco_results(predictions, category_ids=[1, 3, 7])
    assert results == [
        dict(image_id=10, category_id=1, bbox=[10.0, 20.0, 30.0, 15.5], score=pytest.approx(0.9)),
        dict(image_id=10, category_id=7, bbox=[0.0, 0.0, 1.23, 2.0], score=0.25),
    ]
    assert all(type(r["image_id"]) is int and type(r["category_id"]) is int for r in results)


def test_to_coco_results_rejects_labels_outside_the_classes():
    prediction = dict(
        image_id=5, boxes=torch.zeros(1, 4), scores=torch.ones(1), labels=torch.tensor([0])
    )
    with pytest.raises(ValueError, match=r"image_id 5: labels \[0\] outside 1..3"):
        to_coco_results([prediction], category_ids=torch.tensor([1, 3, 7]))


def test_perfect_detections_give_ap_one_and_none_for_classes_without_gt(gt_json, capsys):
    metrics = evaluate_coco(gt_json, _perfect_results())
    for name in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert metrics[name] == pytest.approx(1.0)
    # Names default to the gt file's, in increasing category-id order (1, 3, 7).
    assert list(metrics["per_class"]) == ["one", "three", "seven"]
    assert metrics["per_class"]["one"] == pytest.approx(1.0)
    assert metrics["per_class"]["seven"] == pytest.approx(1.0)
    assert metrics["per_class"]["three"] is None
    assert capsys.readouterr().out == ""  # pycocotools' printing is captured


def test_false_positive_ranked_first_gives_hand_computed_ap(gt_json):
    metrics = evaluate_coco(gt_json, _results_with_false_positives(), ["1", "3", "7"])
    ap_one = 45.5 / 101
    assert metrics["per_class"]["1"] == pytest.approx(ap_one)
    assert metrics["per_class"]["7"] == pytest.approx(1.0)
    assert metrics["per_class"]["3"] is None
    assert metrics["map"] == pytest.approx((ap_one + 1.0) / 2)
    assert metrics["map_50"] == pytest.approx((ap_one + 1.0) / 2)


def test_reported_metrics_equal_cocoeval_on_the_written_file(gt_json, tmp_path):
    results = _results_with_false_positives()
    results_path = tmp_path / "nested" / "results.json"
    write_results(results_path, results)
    metrics = evaluate_coco(gt_json, results)
    stats, evaluator = _cocoeval_stats(gt_json, results_path)
    for name, index in STAT_INDEX.items():
        assert metrics[name] == stats[index], name
    precision_one = evaluator.eval["precision"][:, :, 0, 0, -1]  # category 1 is index 0
    assert metrics["per_class"]["one"] == pytest.approx(precision_one.mean())


def test_evaluate_does_not_modify_the_results(gt_json):
    results = _perfect_results()
    before = json.dumps(results)
    evaluate_coco(gt_json, results)
    assert json.dumps(results) == before


def test_empty_results_give_zeros_not_an_exception(gt_json):
    metrics = evaluate_coco(gt_json, [])
    for name in STAT_INDEX:
        assert metrics[name] == 0.0, name
    assert metrics["per_class"] == {"one": 0.0, "three": None, "seven": 0.0}


def test_results_on_images_outside_the_gt_are_left_out_with_a_warning(gt_json, caplog):
    foreign = _result(999, "one", [0, 0, 10, 10], 0.99)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_coco(gt_json, [foreign, *_perfect_results()])
    assert metrics["map"] == pytest.approx(1.0)
    assert "left out 1 of 5 results" in caplog.text and "999" in caplog.text


def test_unknown_category_and_wrong_class_count_are_errors(gt_json):
    with pytest.raises(ValueError, match=r"category ids \[2\]"):
        evaluate_coco(gt_json, [dict(image_id=10, category_id=2, bbox=[0, 0, 5, 5], score=0.5)])
    with pytest.raises(ValueError, match="2 class names given but .* defines 3 categories"):
        evaluate_coco(gt_json, [], class_names=["one", "seven"])


def test_ground_truth_is_reloaded_when_the_file_changes(gt_json):
    assert evaluate_coco(gt_json, _perfect_results())["map"] == pytest.approx(1.0)
    coco = json.loads(gt_json.read_text())
    coco["annotations"] = coco["annotations"][:1]  # only box A remains
    gt_json.write_text(json.dumps(coco))
    stat = gt_json.stat()
    os.utime(gt_json, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    metrics = evaluate_coco(gt_json, _perfect_results())
    assert metrics["per_class"]["seven"] is None  # the new file has no "seven" box
    assert metrics["per_class"]["one"] < 1.0  # B's detection is now a false positive


def test_boxes_only_ground_truth_is_scored_as_with_the_keys_filled_in(gt_json, tmp_path, caplog):
    """Annotation tools often write boxes only: without `area` the box's w x h (what decides
    small / medium / large), without `iscrowd` not crowd, without `id` numbered after the
    others; the metrics are those of the complete file, and the fill is counted in a warning.
    Until 2026-12-05 such a val json stopped the run at its first validation."""
    complete = evaluate_coco(gt_json, _results_with_false_positives())
    coco = json.loads(gt_json.read_text())
    for annotation in coco["annotations"]:
        del annotation["area"], annotation["iscrowd"]
    del coco["annotations"][2]["id"]  # C: numbered 5, after the largest id (4)
    # D: id 0, which COCOeval would take for "unmatched" (its detection a false positive)
    coco["annotations"][3]["id"] = 0
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps(coco))
    with caplog.at_level(logging.WARNING, logger="labelmatch.evaluation.coco_eval"):
        filled = evaluate_coco(boxes_only, _results_with_false_positives())
    assert filled == complete
    assert complete["map_small"] != complete["map_large"]  # the area split is exercised
    assert (
        "of 4 annotations, 4 without 'area' are scored with their box's area (w x h), "
        "4 without 'iscrowd' as not crowd, 2 without a positive 'id' numbered after the others"
    ) in caplog.text
    del coco["annotations"][0]["bbox"]
    no_box = tmp_path / "no_box.json"
    no_box.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"annotation 0 \(id 1\) lacks \['bbox'\]"):
        evaluate_coco(no_box, [])


def test_a_val_json_with_a_byte_order_mark_is_read_as_the_data_module_reads_it(gt_json, tmp_path):
    """Notepad and PowerShell 5 write UTF-8 with a BOM: the loader accepted such a val json and
    the first validation then stopped on JSONDecodeError (until 2026-12-06)."""
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + gt_json.read_bytes())
    assert evaluate_coco(with_bom, _perfect_results()) == evaluate_coco(gt_json, _perfect_results())


def test_only_the_images_given_are_scored_and_the_others_counted(gt_json, caplog):
    """A val image the loader skipped (data.skip_invalid) has no prediction; scored, its
    objects counted as missed. Perfect detections on images 10 and 11, none on 12 (D, a
    "seven"): every image scored, "seven" finds C and misses D, interpolated precision 1 up
    to recall 0.5 and 0 beyond, AP 51 / 101; images 10 and 11 only, every AP is 1."""
    on_two = [r for r in _perfect_results() if r["image_id"] != 12]
    every = evaluate_coco(gt_json, on_two)
    assert every["per_class"]["seven"] == pytest.approx(51 / 101)
    assert every["map"] == pytest.approx((1 + 51 / 101) / 2)
    with caplog.at_level(logging.WARNING, logger="labelmatch.evaluation.coco_eval"):
        two = evaluate_coco(gt_json, on_two, image_ids=[10, 11, 11, 999])
    assert two["map"] == pytest.approx(1.0) and two["per_class"]["seven"] == pytest.approx(1.0)
    assert "scored 2 of the 3 images" in caplog.text and "[12]" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 image ids to score is an image of"):
        evaluate_coco(gt_json, on_two, image_ids=[999])


def test_a_bad_annotation_stops_only_the_scoring_of_its_image(gt_json, tmp_path, caplog):
    """With data.skip_invalid the val loader drops the image of an annotation it cannot read,
    and counts one of no image; its validation then stopped in pycocotools (bbox "1,1,10,10":
    "list input can be bounding box (Nx4) or RLEs"; image_id [12]: unhashable list). The
    ground truth now leaves such annotations out, and only scoring their image is an error."""
    coco = json.loads(gt_json.read_text())
    coco["annotations"] += [
        {"id": 8, "image_id": 12, "category_id": 1, "bbox": "1,1,10,10"},
        {"id": 9, "image_id": [12], "category_id": 1, "bbox": [1, 1, 10, 10]},
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"annotation 4 \(id 8\) bbox must be 4 finite numbers"):
        evaluate_coco(bad, _perfect_results())
    with caplog.at_level(logging.WARNING, logger="labelmatch.evaluation.coco_eval"):
        metrics = evaluate_coco(bad, _perfect_results(), image_ids=[10, 11])
    assert metrics["map"] == pytest.approx(1.0)
    assert "1 annotations of no image of the file are left out, and 1 images" in caplog.text
