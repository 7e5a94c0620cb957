"""Embedded datasets whose unlabeled images follow another class prior (issue #17): the
shifted probabilities, the unshifted files unchanged, the shifted unlabeled split drawn from
its own prior, and the shift experiments' configs."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from labelmatch.data.digits import class_probabilities as digit_probabilities
from labelmatch.data.digits import generate_digits
from labelmatch.data.embedded import shifted_class_probabilities, with_unlabeled_prior
from labelmatch.data.glyphs import CHARACTERS, GlyphsSplits, generate_glyphs
from labelmatch.data.glyphs import class_probabilities as glyph_probabilities
from tests.conftest import compose_config

DIGITS = dict(num_labeled=8, num_unlabeled=120, num_val=4, image_size=64, max_digit_size=20)
GLYPHS = dict(num_train=40, num_val=2, image_size=96, max_glyph_height=32)


def test_shifted_probabilities_by_hand() -> None:
    shares = np.array([0.2, 0.5, 0.3])  # ranking: class 1, class 2, class 0
    # Reversed: the head (class 1) gets the tail's 0.2, class 2 keeps the middle 0.3, the tail
    # (class 0) gets the head's 0.5.
    assert shifted_class_probabilities(shares, "reversed").tolist() == [0.5, 0.2, 0.3]
    assert shifted_class_probabilities(shares, "uniform").tolist() == pytest.approx([1 / 3] * 3)
    assert shifted_class_probabilities(shares, None) is shares
    with pytest.raises(ValueError, match="unlabeled_class_prior"):
        shifted_class_probabilities(shares, "inverted")
    # The embedded priors reversed: digit 9 is the head, glyph Q (the rarest) the head.
    digits = shifted_class_probabilities(digit_probabilities(10.0), "reversed")
    assert np.allclose(digits, digit_probabilities(10.0)[::-1])
    glyphs = shifted_class_probabilities(glyph_probabilities(80.0), "reversed")
    assert CHARACTERS[int(np.argmax(glyphs))] == "Q" and CHARACTERS[int(np.argmin(glyphs))] == "O"
    assert sorted(glyphs) == pytest.approx(sorted(glyph_probabilities(80.0)))


def test_no_shift_keeps_the_parameters_and_so_the_cache_folder() -> None:
    params = {"seed": 0, "version": 2}
    assert with_unlabeled_prior(params, None) is params
    assert with_unlabeled_prior(params, "uniform") == {**params, "unlabeled_class_prior": "uniform"}
    with pytest.raises(ValueError):
        with_unlabeled_prior(params, "upside-down")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _class_counts(coco: dict) -> Counter:
    return Counter(a["category_id"] for a in coco["annotations"])


def test_shifted_digits_change_only_the_unlabeled_canvases(tmp_path) -> None:
    plain = generate_digits(tmp_path, **DIGITS)
    shifted = generate_digits(tmp_path, **DIGITS, unlabeled_class_prior="reversed")
    assert plain.labeled_json.parent != shifted.labeled_json.parent  # a folder of its own
    for split in ("labeled_json", "val_json"):  # same random streams, same prior
        assert (
            _json(getattr(plain, split))["annotations"]
            == _json(getattr(shifted, split))["annotations"]
        )
    unlabeled = _json(shifted.unlabeled_json)
    assert unlabeled["info"]["parameters"]["unlabeled_class_prior"] == "reversed"
    counts = _class_counts(unlabeled)
    before = _class_counts(_json(plain.unlabeled_json))
    # Digit k is category k + 1: the tail digit 9 leads the shifted pool, the head 0 trails.
    assert counts[10] > 3 * counts[1]
    assert before[1] > 3 * before[10]
    # Drawn again: the same files (deterministic), from the cache.
    again = generate_digits(tmp_path, **DIGITS, unlabeled_class_prior="reversed")
    assert again == shifted


def test_shifted_glyphs_add_an_unlabeled_pool_from_the_shifted_prior(tmp_path) -> None:
    plain = generate_glyphs(tmp_path, **GLYPHS)
    shifted = generate_glyphs(tmp_path, **GLYPHS, unlabeled_class_prior="reversed")
    assert not (plain / "unlabeled.json").exists()
    for split in ("train.json", "val.json"):  # random streams 0 and 1, unchanged
        assert _json(plain / split)["annotations"] == _json(shifted / split)["annotations"]
    unlabeled = _json(shifted / "unlabeled.json")
    assert len(unlabeled["images"]) == GLYPHS["num_train"]
    earlier = [_json(shifted / f"{split}.json")["images"] for split in ("train", "val")]
    ids = {image["id"] for images in earlier for image in images}
    assert not ids & {image["id"] for image in unlabeled["images"]}
    counts = _class_counts(unlabeled)
    train = _class_counts(_json(plain / "train.json"))
    q, o = CHARACTERS.index("Q") + 1, CHARACTERS.index("O") + 1
    assert counts[q] > counts[o] and train[o] > train[q]
    pool = dict(num_train=40, num_val=2, image_size=96, percent=50)
    splits = GlyphsSplits(tmp_path, **pool, unlabeled_class_prior="reversed").resolve()
    assert splits.unlabeled_json.name == "unlabeled.json"
    assert splits.labeled_json.parent == splits.unlabeled_json.parent / "semi_supervised"
    assert GlyphsSplits(tmp_path, **pool).resolve().unlabeled_json.name != "unlabeled.json"


@pytest.mark.parametrize(
    ("experiment", "shift"),
    [
        ("digits_shift", "reversed"),
        ("digits_shift_uniform", "uniform"),
        ("glyphs_shift", "reversed"),
    ],
)
def test_shift_experiments_compose(experiment: str, shift: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.data.splits.unlabeled_class_prior == shift
    assert cfg.method.act.prior is None  # the labeled prior: the case issue #17 is about
