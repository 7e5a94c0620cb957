"""The embedded glyphs dataset: determinism and cache, classes and their long tail, confusable
groups, tight non-overlapping boxes on the written images, COCO-standard folds, the datamodule
and the configs, the README."""

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image
from pycocotools.coco import COCO

from labelmatch.data import fonts, glyphs
from labelmatch.data.class_prior import class_prior_from_counts
from labelmatch.data.fonts import FONT_FILES, font_path, render_bank
from labelmatch.data.glyphs import (
    CHARACTERS,
    CONFUSABLE_GROUPS,
    FREQUENCY_ORDER,
    GlyphsSplits,
    class_probabilities,
    draw_scene,
    generate_glyphs,
    render,
)
from labelmatch.data.split_files.folds import stac_labeled_positions, stac_split
from tests.conftest import REPO, compose_config

SMALL = dict(num_train=24, num_val=6, image_size=96, max_glyph_height=32)
# Many tiny canvases, 8 glyphs each: ~12,000 boxes, so the rarest class has ~48 in the pool and
# a measured head/tail ratio below 50 is 4 standard deviations away from the prior's 80.
LONG_TAIL = dict(
    num_train=1500,
    num_val=1,
    image_size=64,
    min_glyphs=8,
    max_glyphs=8,
    min_glyph_height=8,
    max_glyph_height=11,
    max_distractors=0,
    max_clutter_lines=0,
)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((directory / "images").iterdir())}


def _boxes_by_image(coco: dict) -> dict[int, list[list[int]]]:
    boxes: dict[int, list[list[int]]] = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        boxes[annotation["image_id"]].append(annotation["bbox"])
    return boxes


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_glyphs(tmp_path_factory.mktemp("glyphs"), **SMALL)


@pytest.fixture(scope="module")
def long_tail_counts(tmp_path_factory) -> dict[str, int]:
    """Boxes per class name in a large train pool of tiny canvases."""
    train = _read(generate_glyphs(tmp_path_factory.mktemp("tail"), **LONG_TAIL) / "train.json")
    names = {c["id"]: c["name"] for c in train["categories"]}
    counts = dict.fromkeys(CHARACTERS, 0)
    for annotation in train["annotations"]:
        counts[names[annotation["category_id"]]] += 1
    return counts


# ---- determinism and cache -------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, small):
    again = generate_glyphs(tmp_path / "again", **SMALL)
    for name in ("train.json", "val.json"):
        assert (again / name).read_text() == (small / name).read_text()
    assert _files(again) == _files(small)
    other = generate_glyphs(tmp_path / "other", **SMALL, seed=1)
    assert (other / "train.json").read_text() != (small / "train.json").read_text()


def test_cache_is_reused_and_a_new_generator_version_regenerates(tmp_path, monkeypatch):
    first = generate_glyphs(tmp_path, **SMALL)
    stamp = (first / "val.json").stat().st_mtime_ns
    assert generate_glyphs(tmp_path, **SMALL) == first
    assert (first / "val.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left
    monkeypatch.setattr(glyphs, "_GENERATOR_VERSION", glyphs._GENERATOR_VERSION + 1)
    assert generate_glyphs(tmp_path, **SMALL) != first


def test_a_changed_font_file_regenerates(tmp_path, monkeypatch):
    """The cache is keyed by the fonts' bytes, not their names: a matplotlib release that
    changes one font (same file name) gets a dataset of its own."""
    first = generate_glyphs(tmp_path, **SMALL)
    original = fonts.font_digests()
    fonts_dir = tmp_path / "fonts"
    fonts_dir.mkdir()
    for name in FONT_FILES:
        (fonts_dir / name).write_bytes(font_path(name).read_bytes())
    (fonts_dir / FONT_FILES[0]).write_bytes(font_path(FONT_FILES[0]).read_bytes() + b"\0")
    monkeypatch.setattr(fonts, "font_path", lambda name: fonts_dir / name)
    fonts.font_digests.cache_clear()
    try:
        changed = fonts.font_digests()
        assert [changed[n] != d for n, d in original.items()] == [True] + [False] * 20
        assert generate_glyphs(tmp_path, **SMALL) != first
    finally:
        fonts.font_digests.cache_clear()


def test_splits_generate_nothing_until_resolved(tmp_path):
    GlyphsSplits(tmp_path / "lazy", num_train=10)
    assert not (tmp_path / "lazy").exists()


# ---- classes, long tail, confusable groups -------------------------------------------------


def test_classes_are_37_named_characters_in_coco_files(small):
    assert len(CHARACTERS) == len(set(CHARACTERS)) == 37 >= 30
    assert sorted(FREQUENCY_ORDER) == sorted(CHARACTERS)
    for name, count in (("train.json", 24), ("val.json", 6)):
        coco = COCO(str(small / name))
        assert len(coco.getImgIds()) == count
        categories = coco.loadCats(coco.getCatIds())
        assert [c["id"] for c in categories] == list(range(1, 38))
        assert "".join(c["name"] for c in categories) == CHARACTERS
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(small / "images" / image["file_name"]) as picture:
                assert picture.mode == "RGB" and picture.size == (96, 96)
                assert (image["width"], image["height"]) == (96, 96)
            assert 1 <= len(coco.getAnnIds(imgIds=image["id"])) <= 8


def test_class_prior_is_zipf_over_the_frequency_order():
    p = class_probabilities(80.0)
    assert p.sum() == pytest.approx(1.0)
    by_rank = p[[CHARACTERS.index(c) for c in FREQUENCY_ORDER]]
    assert np.all(np.diff(by_rank) < 0)
    assert by_rank[0] / by_rank[-1] == pytest.approx(80.0)
    exponent = np.log(80.0) / np.log(37)
    assert by_rank[0] / by_rank[1] == pytest.approx(2**exponent)  # rank 1 vs rank 2


def test_generated_pool_has_a_head_at_least_50_times_its_tail(long_tail_counts):
    counts = np.array([long_tail_counts[c] for c in FREQUENCY_ORDER])
    assert counts.sum() > 11_600  # (almost) every glyph found a spot
    assert counts.min() > 0 and counts.max() / counts.min() >= 50
    assert counts.argmax() == 0  # "O", rank 1
    expected = class_probabilities(80.0)[[CHARACTERS.index(c) for c in FREQUENCY_ORDER]]
    assert np.abs(counts / counts.sum() - expected).max() < 0.02


@pytest.mark.slow
def test_default_pool_has_its_tail_in_every_10pct_fold_and_a_head_50x_it(cache_dir):
    """The shipped configuration itself (8000 canvases, about 1.5 minutes to generate once)."""
    folds = [GlyphsSplits(cache_dir / "glyphs", percent=10, fold=f).resolve() for f in (1, 2, 3)]
    pool = _read(folds[0].labeled_json.parent.parent / "train.json")
    counts = np.bincount([a["category_id"] for a in pool["annotations"]], minlength=38)[1:]
    assert len(pool["images"]) == 8000 and counts.max() / counts.min() >= 50
    for fold in folds:
        labeled = _read(fold.labeled_json)["annotations"]
        assert set(range(1, 38)) == {a["category_id"] for a in labeled}


def test_confusable_groups_span_head_and_tail_and_are_drawn(long_tail_counts):
    members = "".join(CONFUSABLE_GROUPS)
    assert len(CONFUSABLE_GROUPS) >= 6 and len(members) == len(set(members))
    assert {"O0QD", "1Il", "S5", "B8", "Z2", "G6"} == set(CONFUSABLE_GROUPS)
    third = len(FREQUENCY_ORDER) // 3
    for group in CONFUSABLE_GROUPS:
        ranks = sorted(FREQUENCY_ORDER.index(c) for c in group)
        assert ranks[0] < third and ranks[-1] >= 2 * third, group  # a head and a tail member
        assert all(long_tail_counts[c] > 0 for c in group)


# ---- boxes -------------------------------------------------------------------------------------


def test_boxes_lie_inside_their_image_and_do_not_overlap(small):
    for name in ("train.json", "val.json"):
        coco = _read(small / name)
        sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
        for image_id, boxes in _boxes_by_image(coco).items():
            width, height = sizes[image_id]
            for x, y, w, h in boxes:
                assert x >= 0 and y >= 0 and w > 0 and h > 0
                assert x + w <= width and y + h <= height
            for (ax, ay, aw, ah), (bx, by, bw, bh) in combinations(boxes, 2):
                overlap_w = min(ax + aw, bx + bw) - max(ax, bx)
                overlap_h = min(ay + ah, by + bh) - max(ay, by)
                assert overlap_w <= 0 or overlap_h <= 0


def test_glyph_heights_span_the_configured_range(small):
    heights = [a["bbox"][3] for a in _read(small / "train.json")["annotations"]]
    # Drawn log-uniform in 10..32 px; the ink after rotation may lose a pixel row.
    assert 9 <= min(heights) <= 14 and 24 <= max(heights) <= 32


def test_written_boxes_hug_the_glyph_ink_of_the_written_images(small):
    """Replays the train split's random stream (child 0 of the seed, as `write_coco_splits`
    draws it): each scene's glyph boxes are the annotations, every box edge crosses glyph ink,
    no glyph ink lies outside the boxes, and the written JPEG is that scene."""
    train = _read(small / "train.json")
    params = train["info"]["parameters"]
    rng = np.random.default_rng(np.random.SeedSequence(params["seed"]).spawn(2)[0])
    bank = render_bank(CHARACTERS)
    boxes = _boxes_by_image(train)
    for image in train["images"][:8]:
        scene = draw_scene(rng, bank, params)
        assert [g.box for g in scene.glyphs] == boxes[image["id"]]
        canvas = render(scene)
        # Glyph ink: what the glyphs change, background clutter and noise being the same.
        ink = (canvas != render(scene, with_glyphs=False)).any(-1)
        covered = np.zeros_like(ink)
        for x, y, w, h in boxes[image["id"]]:
            inside = ink[y : y + h, x : x + w]
            assert inside[0].any() and inside[-1].any(), (image["id"], x, y, w, h)
            assert inside[:, 0].any() and inside[:, -1].any(), (image["id"], x, y, w, h)
            covered[y : y + h, x : x + w] = True
        assert ink.any() and not (ink & ~covered).any(), "glyph ink outside every box"
        written = np.asarray(Image.open(small / "images" / image["file_name"]), np.int16)
        error = np.abs(written - canvas).mean(-1)  # JPEG's, about 2 grey levels
        assert error.mean() < 3 and error[ink].mean() < 6


def test_the_glyph_opacity_is_cropped_to_its_ink():
    mask = render_bank("W")[0]["W"]
    for angle in (-20.0, 0.0, 13.0):
        opacity = glyphs.glyph_opacity(mask, 24, angle)
        assert opacity.shape[0] in (22, 23, 24)
        assert opacity[0].any() and opacity[-1].any() and opacity[:, 0].any()
        assert opacity[:, -1].any()
        assert opacity.max() <= 1.0 and opacity[opacity > 0].min() >= 0.25


# ---- folds -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fold_root(tmp_path_factory) -> Path:
    """One cache for the fold tests: the pool is generated once, each fold writes its files."""
    return tmp_path_factory.mktemp("folds")


@pytest.mark.parametrize("percent", [1, 5, 10])
def test_folds_are_the_coco_standard_sampler_over_the_train_pool(fold_root, percent):
    pool = dict(num_train=200, num_val=4, image_size=96)
    splits = GlyphsSplits(fold_root, percent=percent, fold=2, **pool).resolve()
    train = _read(splits.labeled_json.parent.parent / "train.json")
    labeled, unlabeled = _read(splits.labeled_json), _read(splits.unlabeled_json)
    expected_labeled, expected_unlabeled = stac_split(train, percent, 2)
    assert labeled["images"] == expected_labeled["images"]
    assert unlabeled["images"] == expected_unlabeled["images"]
    assert labeled["annotations"] == expected_labeled["annotations"]
    assert len(labeled["images"]) == len(stac_labeled_positions(200, percent, 2)) > 0
    labeled_ids = {i["id"] for i in labeled["images"]}
    unlabeled_ids = {i["id"] for i in unlabeled["images"]}
    val_ids = {i["id"] for i in _read(splits.val_json)["images"]}
    assert not labeled_ids & unlabeled_ids and not (labeled_ids | unlabeled_ids) & val_ids
    assert labeled_ids | unlabeled_ids == {i["id"] for i in train["images"]}
    assert splits.labeled_json.name == f"train.2@{percent}.json"
    # Deterministic per fold, another fold another labeled set.
    assert GlyphsSplits(fold_root, percent=percent, fold=2, **pool).resolve() == splits
    other = GlyphsSplits(fold_root, percent=percent, fold=3, **pool).resolve()
    assert {i["id"] for i in _read(other.labeled_json)["images"]} != labeled_ids


# ---- datamodule, configs, README ---------------------------------------------------------


@pytest.mark.parametrize("percent", [1, 5, 10])
def test_glyphs_experiments_are_the_two_stage_recipe(percent):
    """The glyphs recipe (ours; why each number: docs/benchmarks.md, "The glyphs recipe")."""
    stage1 = compose_config([f"experiment=glyphs_{percent}pct_baseline"])
    stage2 = compose_config([f"experiment=glyphs_{percent}pct"])
    for cfg in (stage1, stage2):
        splits = cfg.data.splits
        assert splits._target_.endswith("GlyphsSplits")
        assert (splits.percent, splits.fold, splits.num_train) == (percent, 1, 8000)
        assert splits.num_val == 500
        assert cfg.data.flip_prob == 0.0  # a mirrored glyph is no glyph of its class
        assert (cfg.optim.warmup_steps, cfg.optim.warmup_factor) == (100, 0.001)
    # Stage 1: supervised, as the official baseline (weak-view scales, no colour jitter).
    assert stage1.method.name == "supervised"
    assert (stage1.data.labeled_batch_size, stage1.optim.lr) == (8, 0.02)
    assert list(stage1.data.train_scales) == list(stage1.data.weak_scales)
    assert stage1.data.labeled_photometric is False
    assert (stage1.trainer.max_steps, list(stage1.optim.milestones)) == (1500, [1000, 1375])
    # Stage 2: LabelMatch from the baseline, no burn-in, 4 EMA time constants.
    method = stage2.method
    assert method.name == "labelmatch" and method.burn_in_steps == 0 and method.init_from is None
    assert (stage2.data.labeled_batch_size, stage2.data.unlabeled_batch_size) == (4, 4)
    assert (stage2.optim.lr, list(stage2.optim.milestones)) == (0.005, [])
    assert stage2.trainer.max_steps == 1000 >= 4 / (1 - method.ema_momentum)
    assert (method.act.interval, method.act.subset) == (250, 1000)
    assert stage2.trainer.val_check_interval == 500


def test_data_glyphs_loads_through_the_datamodule(tmp_path):
    splits = ["num_train=40", "num_val=4", "percent=10", f"root={tmp_path}"]
    cfg = compose_config(
        ["data=glyphs", "data.num_workers=0", *(f"data.splits.{o}" for o in splits)]
    )
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    assert data.num_classes == 37 and "".join(data.class_names) == CHARACTERS
    assert len(data.labeled_dataset) + len(data.unlabeled_dataset) == 40
    assert len(data.val_dataset) == 4
    batch = next(iter(data.train_dataloader()["labeled"]))
    assert len(batch["images"]) == cfg.data.labeled_batch_size
    for image, target in zip(batch["images"], batch["targets"]):
        assert image.shape[0] == 3 and min(image.shape[1:]) in cfg.data.train_scales
        assert ((target["labels"] >= 1) & (target["labels"] <= 37)).all()
    val = next(iter(data.val_dataloader()))
    assert val["images"][0].shape == (3, 160, 160)


def test_a_calibration_split_of_the_glyphs_is_another_seed_s_pool(tmp_path):
    """data.splits.num_calibration (docs/method.md §2 "Estimated prior"): a pool of that many
    canvases of generator seed `calibration_seed`, all annotated, which the datamodule reads as
    the calibration images with their own prior; no labeled canvas among them; the same seed
    refused. The shifted unlabeled set stays as it was."""
    splits = ["num_train=40", "num_val=4", "percent=10", f"root={tmp_path}"]
    base = ["data=glyphs", "data.num_workers=0", *(f"data.splits.{o}" for o in splits)]
    plain = instantiate(compose_config(base).data.splits).resolve()
    assert plain.calibration_json is None
    cfg = compose_config([*base, "data.splits.num_calibration=6"])
    resolved = instantiate(cfg.data.splits).resolve()
    assert resolved.labeled_json == plain.labeled_json  # the same fold of the same pool
    calibration = _read(resolved.calibration_json)
    assert len(calibration["images"]) == 6 and calibration["annotations"]
    assert resolved.calibration_image_dir.parent == resolved.calibration_json.parent
    assert resolved.calibration_image_dir != plain.image_dir
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    assert data.calibration_images is data.calibration_dataset and len(data.calibration_images) == 6
    by_rule = class_prior_from_counts(data.calibration_images.prior_counts, 6)  # the labeled rule
    assert data.calibration_class_prior.boxes_per_image == by_rule.boxes_per_image
    assert sum(data.calibration_images.prior_counts) == len(calibration["annotations"])
    labeled = {Path(f).resolve() for f in data.labeled_dataset.image_files}
    assert not labeled & {Path(f).resolve() for f in data.calibration_images.image_files}
    shifted = GlyphsSplits(
        tmp_path, num_train=40, num_val=4, num_calibration=6, unlabeled_class_prior="reversed"
    ).resolve()
    assert shifted.unlabeled_json.name == "unlabeled.json"
    assert shifted.calibration_json == resolved.calibration_json
    with pytest.raises(ValueError, match="calibration_seed must differ from seed"):
        GlyphsSplits(tmp_path, num_train=40, num_calibration=6, calibration_seed=0).resolve()


def test_readme_lists_the_glyphs_and_shows_the_sample_grid():
    readme = (REPO / "README.md").read_text()
    data_row = next(line for line in readme.splitlines() if line.startswith("| `data` |"))
    assert "`glyphs`" in data_row
    assert all(f"`glyphs_{p}pct`" in readme for p in (1, 5, 10))
    grid = re.search(r"\((docs/glyphs_samples\.png)\)", readme)
    assert grid and (REPO / grid[1]).stat().st_size < 200 * 1024


def test_a_square_wider_than_the_canvas_has_no_spot_and_draws_nothing():
    """A 48 px tall `M` is up to 77 px wide: on a canvas under that the placement drew from an
    empty range (numpy "high <= 0") and generation stopped with a traceback; such a glyph is
    now not placed. No draw is taken, so squares that fit are placed as before."""
    from labelmatch.data.embedded import free_spot

    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert free_spot(rng, 64, 77, []) is None
    assert rng.bit_generator.state == before
    assert free_spot(rng, 64, 64, []) == (0, 0)
