"""The embedded digits dataset: determinism, COCO validity, geometry, long tail, disjoint val."""

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from sklearn.datasets import load_digits

from labelmatch.data import digits
from labelmatch.data.coco import CocoSplits
from labelmatch.data.digits import (
    DigitsSplits,
    class_probabilities,
    digit_source_split,
    generate_digits,
)

SMALL = dict(
    num_labeled=8,
    num_unlabeled=16,
    num_val=8,
    image_size=64,
    min_digit_size=12,
    max_digit_size=24,
)


def _files(splits: CocoSplits) -> list[Path]:
    return [splits.labeled_json, splits.unlabeled_json, splits.val_json]


def _pngs(splits: CocoSplits) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(splits.image_dir.iterdir())}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> CocoSplits:
    return generate_digits(tmp_path_factory.mktemp("digits"), **SMALL)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, small):
    again = generate_digits(tmp_path / "again", **SMALL)
    assert [p.read_text() for p in _files(again)] == [p.read_text() for p in _files(small)]
    assert _pngs(again) == _pngs(small)
    other = generate_digits(tmp_path / "other", **SMALL, seed=1)
    assert other.labeled_json.read_text() != small.labeled_json.read_text()
    assert _pngs(other) != _pngs(small)


def test_second_call_reuses_the_cache_and_leaves_no_temporary_folder(tmp_path):
    first = generate_digits(tmp_path, **SMALL)
    stamp = first.val_json.stat().st_mtime_ns
    second = DigitsSplits(tmp_path, **SMALL).resolve()
    assert second == first
    assert second.val_json.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.image_dir.parent.name]
    # Another parameter set lives in its own folder.
    assert generate_digits(tmp_path, **{**SMALL, "num_val": 9}).image_dir != first.image_dir


def test_digits_splits_generates_nothing_until_resolved(tmp_path):
    DigitsSplits(tmp_path / "lazy", **SMALL)
    assert not (tmp_path / "lazy").exists()


def test_pycocotools_loads_every_file_with_ten_named_categories(small):
    counts = {"labeled.json": 8, "unlabeled.json": 16, "val.json": 8}
    all_image_ids = []
    for path in _files(small):
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == counts[path.name]
        assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == list(range(1, 11))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [str(k) for k in range(10)]
        assert len(coco.getAnnIds()) >= 2 * counts[path.name] - 2  # 2-6 digits, rarely fewer
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(small.image_dir / image["file_name"]) as png:
                assert png.mode == "RGB" and png.size == (64, 64)
        all_image_ids += coco.getImgIds()
    assert len(set(all_image_ids)) == len(all_image_ids) == 32


def test_boxes_lie_inside_their_image_and_do_not_overlap(small):
    for path in _files(small):
        coco = json.loads(path.read_text())
        for image in coco["images"]:
            boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]]
            for x, y, w, h in boxes:
                assert x >= 0 and y >= 0 and w > 0 and h > 0
                assert x + w <= image["width"] and y + h <= image["height"]
            for (ax, ay, aw, ah), (bx, by, bw, bh) in combinations(boxes, 2):
                overlap_w = min(ax + aw, bx + bw) - max(ax, bx)
                overlap_h = min(ay + ah, by + bh) - max(ay, by)
                assert overlap_w <= 0 or overlap_h <= 0


def test_boxes_are_the_tight_boxes_of_the_ink(tmp_path):
    splits = generate_digits(tmp_path, **SMALL, noise_std=0.0)
    coco = json.loads(splits.labeled_json.read_text())
    for image in coco["images"]:
        pixels = np.asarray(Image.open(splits.image_dir / image["file_name"])).astype(int)
        colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
        ink = np.abs(pixels - colours[counts.argmax()]).sum(-1) > 0  # not the background colour
        covered = np.zeros_like(ink)
        for a in coco["annotations"]:
            if a["image_id"] != image["id"]:
                continue
            x, y, w, h = a["bbox"]
            covered[y : y + h, x : x + w] = True
            inside = ink[y : y + h, x : x + w]
            # Every edge of a tight box touches ink.
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
        assert not (ink & ~covered).any(), "ink outside every box"


def test_class_probabilities_follow_the_tail():
    p = class_probabilities(10.0)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] / p[9] == pytest.approx(10.0)
    assert p[0] / p[1] == pytest.approx(10 ** (1 / 9))
    assert np.all(np.diff(p) < 0)
    assert np.allclose(class_probabilities(1.0), 0.1)


def test_generated_class_frequencies_follow_the_tail(tmp_path):
    # 2,000 canvases x 4 digits: digit 9 (p ~ 0.025) appears ~200 times, ratio error ~7 %.
    splits = generate_digits(
        tmp_path,
        num_labeled=1,
        num_unlabeled=2000,
        num_val=1,
        image_size=48,
        min_digits=4,
        max_digits=4,
        min_digit_size=8,
        max_digit_size=10,
        noise_std=0.0,
    )
    coco = json.loads(splits.unlabeled_json.read_text())
    counts = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=10)
    assert counts.sum() > 7900  # (almost) every digit found a free spot
    assert counts.argmax() == 0 and counts.argmin() == 9
    assert 7.5 < counts[0] / counts[9] < 13.5
    assert np.abs(counts / counts.sum() - class_probabilities(10.0)).max() < 0.015


def test_val_digit_sources_are_disjoint_from_train_sources(tmp_path, monkeypatch):
    targets = load_digits().target
    train, val = digit_source_split(targets)
    for k in range(10):
        assert not set(train[k]) & set(val[k])
        assert sorted([*train[k], *val[k]]) == list(np.flatnonzero(targets == k))
        assert (targets[train[k]] == k).all() and (targets[val[k]] == k).all()
        assert 0.15 < len(val[k]) / (len(train[k]) + len(val[k])) < 0.25

    # And the generator draws validation canvases from the validation sources only.
    used_sources = []
    draw = digits._draw_canvas

    def spy(rng, digit_images, sources, *rest):
        used_sources.append(sources)
        return draw(rng, digit_images, sources, *rest)

    monkeypatch.setattr(digits, "_draw_canvas", spy)
    generate_digits(tmp_path, **SMALL)
    train_calls, val_calls = used_sources[:24], used_sources[24:]
    assert len(val_calls) == 8
    for k in range(10):
        assert all(np.array_equal(s[k], train[k]) for s in train_calls)
        assert all(np.array_equal(s[k], val[k]) for s in val_calls)


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_digit_size"):
        generate_digits(tmp_path, image_size=32, max_digit_size=40)
    with pytest.raises(ValueError, match="min_digits"):
        generate_digits(tmp_path, min_digits=3, max_digits=2)
