"""`python -m labelmatch.prepare`: COCO-standard folds against the reference algorithm, Unbiased
Teacher's position lists, VOC XML, the sidecar, and the first-use/missing-data paths."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelmatch.data.categories import CategoryMap
from labelmatch.data.coco import CocoDetection
from labelmatch.data.datamodule import DetectionDataModule
from labelmatch.data.digits import DigitsFoldSplits, generate_digits
from labelmatch.data.errors import DataError
from labelmatch.data.paper_datasets import CocoAdditionalSplits, CocoStandardSplits, VocSplits
from labelmatch.data.split_files import files as split_files
from labelmatch.data.split_files.custom_split import write_custom_split
from labelmatch.data.split_files.folds import stac_split
from labelmatch.data.split_files.image_folder import unreadable_reason, write_folder_coco
from labelmatch.data.split_files.unbiased_teacher import write_ut_split
from labelmatch.data.split_files.voc import write_voc
from labelmatch.evaluation.coco_eval import evaluate_coco
from labelmatch.prepare.__main__ import main as prepare

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "brush"}]


def synthetic_train2017(num_images: int = 1000, seed: int = 0) -> dict:
    """instances_train2017.json in miniature: ids not sorted in file order, 0-4 boxes per image
    (some images without any, some boxes crowd), plus licenses and info."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, 5 * num_images))[:num_images].tolist()
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in ids]
    annotations = []
    for image_id in ids:
        for _ in range(int(rng.integers(0, 5))):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([1, 3, 90])),
                    "bbox": [1, 2, 10, 12],
                    "area": 120,
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
    rng.shuffle(annotations)  # annotations need not be grouped by image
    return {
        "info": {"description": "synthetic"},
        "licenses": [{"id": 1, "name": "x"}],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def reference_stac_split(anno: dict, seed: int, percent: float) -> tuple[dict, dict]:
    """STAC's prepare_coco_data.py / MMDetection's split_coco.py, written out as they are."""
    np.random.seed(seed)
    image_list = anno["images"]
    labeled_tot = int(percent / 100.0 * len(image_list))
    labeled_ind = np.random.choice(range(len(image_list)), size=labeled_tot)
    labeled_id, labeled_images, unlabeled_images = [], [], []
    labeled_ind = set(labeled_ind)
    for i in range(len(image_list)):
        if i in labeled_ind:
            labeled_images.append(image_list[i])
            labeled_id.append(image_list[i]["id"])
        else:
            unlabeled_images.append(image_list[i])
    labeled_id = set(labeled_id)
    labeled_annotations, unlabeled_annotations = [], []
    for an in anno["annotations"]:
        if an["image_id"] in labeled_id:
            labeled_annotations.append(an)
        else:
            unlabeled_annotations.append(an)

    def save(images, annotations):
        return {
            "images": images,
            "annotations": annotations,
            "licenses": anno["licenses"],
            "categories": anno["categories"],
            "info": anno["info"],
        }

    return save(labeled_images, labeled_annotations), save(unlabeled_images, unlabeled_annotations)


def write_coco_dir(root: Path, train: dict) -> Path:
    """A COCO 2017 layout: train2017/, val2017/, annotations/ with train and a tiny val json."""
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    (root / "val2017").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    val = {"images": [], "annotations": [], "categories": train["categories"]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    return root


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- COCO-standard folds ---------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, -1, 150])
def test_a_labeled_percent_outside_0_to_100_is_refused(percent) -> None:
    with pytest.raises(DataError, match=r"labeled percent must lie in \(0, 100\]"):
        stac_split(synthetic_train2017(), percent, seed=1)


def test_the_fold_sampler_takes_100_percent_as_the_reference_does() -> None:
    """(0, 100] is the fold sampler's range (coco_standard, digits_fold, glyphs), unlike
    `prepare split`'s (0, 100): 100 % is N draws with replacement, about 63 % of the images."""
    train = synthetic_train2017()
    labeled, unlabeled = stac_split(train, 100, seed=1)
    assert (labeled, unlabeled) == reference_stac_split(train, 1, 100)
    assert 0.6 < len(labeled["images"]) / 1000 < 0.67 and unlabeled["images"]


@pytest.mark.parametrize(("seed", "percent"), [(1, 1), (2, 5), (5, 10)])
def test_coco_standard_split_equals_the_reference_algorithm(tmp_path, seed, percent) -> None:
    train = synthetic_train2017()
    root = write_coco_dir(tmp_path / "coco", train)
    prepare(["coco_standard", "--data-dir", str(root), "--percent", str(percent),
             "--seed", str(seed)])  # fmt: skip
    folder = root / "annotations" / "semi_supervised"
    labeled = read(folder / f"instances_train2017.{seed}@{percent}.json")
    unlabeled = read(folder / f"instances_train2017.{seed}@{percent}-unlabeled.json")
    expected_labeled, expected_unlabeled = reference_stac_split(train, seed, percent)
    # Same images (ids, file order, count), annotations, and copied keys in the same order.
    assert labeled == expected_labeled and list(labeled) == list(expected_labeled)
    assert unlabeled == expected_unlabeled
    # Nothing lost, nothing twice; annotations follow their images.
    labeled_ids = [image["id"] for image in labeled["images"]]
    unlabeled_ids = [image["id"] for image in unlabeled["images"]]
    assert sorted(labeled_ids + unlabeled_ids) == sorted(i["id"] for i in train["images"])
    assert not set(labeled_ids) & set(unlabeled_ids)
    assert len(labeled["annotations"]) + len(unlabeled["annotations"]) == len(train["annotations"])
    assert {a["image_id"] for a in labeled["annotations"]} <= set(labeled_ids)
    # With replacement: at most int(percent / 100 * N) images.
    assert 0 < len(labeled_ids) <= int(percent / 100 * 1000)
    sidecar = read(folder / f"instances_train2017.{seed}@{percent}.ids.json")
    assert sidecar["labeled_image_ids"] == sorted(labeled_ids)
    canonical = ",".join(map(str, sorted(labeled_ids))).encode()
    assert sidecar["checksum"] == hashlib.sha256(canonical).hexdigest()
    assert (sidecar["fold"], sidecar["percent"]) == (seed, percent)


def test_fold_files_are_written_on_first_use_and_reused_afterwards(tmp_path) -> None:
    root = write_coco_dir(tmp_path / "coco", synthetic_train2017(200))
    splits = CocoStandardSplits(root, fold=3, percent=5).resolve()
    assert splits.labeled_json.name == "instances_train2017.3@5.json"
    assert splits.unlabeled_json.name == "instances_train2017.3@5-unlabeled.json"
    assert (splits.image_dir, splits.val_image_dir) == (root / "train2017", root / "val2017")
    assert splits.unlabeled_image_dir == root / "train2017"
    # A split file from another codebase (here: one image fewer) is reused as it is.
    other = read(splits.labeled_json)
    other["images"] = other["images"][1:]
    splits.labeled_json.write_text(json.dumps(other))
    CocoStandardSplits(root, fold=3, percent=5).resolve()
    assert read(splits.labeled_json) == other


def read_only_below(root: Path, monkeypatch) -> None:
    """Refuse to create files under `root` as a read-only mount would (EACCES). The tests run as
    root on CI, where chmod would not stop a write, so the refusal is patched in."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir, **kwargs):
        if Path(dir).is_relative_to(root):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(split_files.tempfile, "mkstemp", mkstemp)


def test_a_read_only_dataset_takes_its_split_files_from_split_dir(tmp_path, monkeypatch) -> None:
    train = synthetic_train2017(200)
    root = write_coco_dir(tmp_path / "coco", train)
    read_only_below(root, monkeypatch)
    with pytest.raises(DataError) as error:
        CocoStandardSplits(root, fold=2, percent=10).resolve()
    unlabeled = root / "annotations" / "semi_supervised" / "instances_train2017.2@10-unlabeled.json"
    assert f"{unlabeled}: cannot write it (Permission denied)" in str(error.value)
    assert "data.splits.split_dir=DIR" in str(error.value)

    elsewhere = tmp_path / "splits"
    splits = CocoStandardSplits(root, fold=2, percent=10, split_dir=elsewhere).resolve()
    assert splits.labeled_json == elsewhere / "instances_train2017.2@10.json"
    assert splits.unlabeled_json == elsewhere / "instances_train2017.2@10-unlabeled.json"
    assert (elsewhere / "instances_train2017.2@10.ids.json").is_file()
    assert not list((root / "annotations").rglob("instances_train2017.2@10*"))
    expected_labeled, _ = stac_split(train, 10, seed=2)
    assert read(splits.labeled_json)["images"] == expected_labeled["images"]
    # prepare --out-dir writes the same files where a run with split_dir then finds them.
    prepared = tmp_path / "prepared"
    prepare(["coco_standard", "--data-dir", str(root), "--percent", "10", "--seed", "2",
             "--out-dir", str(prepared)])  # fmt: skip
    assert read(prepared / splits.labeled_json.name) == read(splits.labeled_json)
    # Unbiased Teacher's split family reads from split_dir and names it in the fix.
    ut = CocoStandardSplits(root, fold=1, percent=10, split="unbiased_teacher", split_dir=prepared)
    with pytest.raises(DataError) as error:
        ut.resolve()
    assert f"{prepared / 'instances_train2017.ut1@10.json'} does not exist" in str(error.value)
    assert f"--seed 1 --out-dir {prepared}" in str(error.value)


def test_voc_and_coco_additional_write_to_out_dir_and_read_from_split_dir(
    tmp_path, mini_devkit, monkeypatch
) -> None:
    read_only_below(mini_devkit, monkeypatch)
    with pytest.raises(SystemExit):
        prepare(["voc", "--devkit", str(mini_devkit)])
    out = tmp_path / "voc-json"
    prepare(["voc", "--devkit", str(mini_devkit), "--out-dir", str(out)])
    splits = VocSplits(mini_devkit, split_dir=out).resolve()
    assert splits.labeled_json == out / "voc07_trainval.json"
    assert splits.image_dir == mini_devkit  # file names stay relative to the devkit
    assert not list(mini_devkit.rglob("voc07_*.json"))  # only the refused first try's folder

    root = write_coco_dir(tmp_path / "coco", synthetic_train2017(10))
    (root / "unlabeled2017").mkdir()
    info = {"images": [{"id": 7, "file_name": "000000000007.jpg", "width": 9, "height": 9}]}
    (root / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    read_only_below(root, monkeypatch)
    with pytest.raises(DataError, match="instances_unlabeled2017.json: cannot write it"):
        CocoAdditionalSplits(root).resolve()
    additional = CocoAdditionalSplits(root, split_dir=tmp_path / "additional").resolve()
    assert additional.unlabeled_json == tmp_path / "additional" / "instances_unlabeled2017.json"
    assert [image["id"] for image in read(additional.unlabeled_json)["images"]] == [7]


def test_fold_sources_with_bad_records_name_the_file_and_the_record(tmp_path) -> None:
    train = synthetic_train2017(20)
    train["annotations"][3] = "box"
    root = write_coco_dir(tmp_path / "coco", train)
    source = root / "annotations" / "instances_train2017.json"
    with pytest.raises(DataError, match=rf"{source}: annotation record 3 must be an object"):
        CocoStandardSplits(root, fold=1, percent=10).resolve()
    train = synthetic_train2017(20)
    del train["images"][5]["id"]
    source.write_text(json.dumps(train))
    with pytest.raises(DataError, match=r"image record 5 needs an integer 'id'"):
        CocoStandardSplits(root, fold=1, percent=10).resolve()
    train["images"][5]["id"] = "000000000005"  # training reads integer ids only
    source.write_text(json.dumps(train))
    with pytest.raises(DataError, match=r"image record 5 needs an integer 'id'"):
        CocoStandardSplits(root, fold=1, percent=10).resolve()
    assert not (root / "annotations" / "semi_supervised").exists()


def test_checksum_command_matches_the_sidecar(tmp_path, capsys) -> None:
    root = write_coco_dir(tmp_path / "coco", synthetic_train2017(100))
    prepare(["coco_standard", "--data-dir", str(root), "--percent", "10", "--seed", "1"])
    labeled = root / "annotations" / "semi_supervised" / "instances_train2017.1@10.json"
    capsys.readouterr()
    prepare(["checksum", str(labeled)])
    printed = capsys.readouterr().out.split()[0]
    assert printed == read(labeled.with_name("instances_train2017.1@10.ids.json"))["checksum"]


def test_digits_fold_split_is_the_same_sampler_on_the_train_canvases(tmp_path) -> None:
    small = dict(num_val=4, image_size=64, tail_ratio=10.0, seed=0)
    splits = DigitsFoldSplits(tmp_path, num_train=40, percent=25, fold=2, **small).resolve()
    pool = read(generate_digits(tmp_path, num_labeled=40, num_unlabeled=0, **small).labeled_json)
    expected_labeled, expected_unlabeled = stac_split(pool, 25, 2)
    assert read(splits.labeled_json)["images"] == expected_labeled["images"]
    assert read(splits.unlabeled_json)["images"] == expected_unlabeled["images"]
    assert splits.labeled_json.name == "train.2@25.json"


# ---- Unbiased Teacher's position lists -------------------------------------------------------


def test_ut_positions_index_images_sorted_by_id_without_crowd_only_images(tmp_path) -> None:
    train = synthetic_train2017(300, seed=1)
    root = write_coco_dir(tmp_path / "coco", train)
    with_objects = sorted(
        {a["image_id"] for a in train["annotations"] if a["iscrowd"] == 0}
    )  # what detectron2 keeps, in its (id) order
    count = int(10 / 100 * len(with_objects))  # Unbiased Teacher's count for 10 %
    positions = np.random.default_rng(0).choice(len(with_objects), count, replace=False)
    supervision = tmp_path / "COCO_supervision.txt"
    supervision.write_text(json.dumps({"10.0": {"0": positions.tolist()}}))
    prepare(["ut_split", "--data-dir", str(root), "--supervision-file", str(supervision),
             "--percent", "10", "--seed", "0"])  # fmt: skip
    folder = root / "annotations" / "semi_supervised"
    labeled = read(folder / "instances_train2017.ut0@10.json")
    unlabeled = read(folder / "instances_train2017.ut0@10-unlabeled.json")
    expected = sorted(with_objects[p] for p in positions)
    assert [i["id"] for i in labeled["images"]] == expected
    assert [i["id"] for i in unlabeled["images"]] == [i for i in with_objects if i not in expected]
    by_image = {i["id"]: [a for a in train["annotations"] if a["image_id"] == i["id"]]
                for i in train["images"]}  # fmt: skip
    assert labeled["annotations"] == [a for a in train["annotations"] if a["image_id"] in expected]
    assert sum(len(by_image[i]) for i in expected) == len(labeled["annotations"])
    sidecar = read(folder / "instances_train2017.ut0@10.ids.json")
    assert sidecar["labeled_image_ids"] == expected
    assert sidecar["images_without_objects_left_out"] == 300 - len(with_objects) > 0


def test_ut_positions_of_another_train_file_are_rejected(tmp_path) -> None:
    root = write_coco_dir(tmp_path / "coco", synthetic_train2017(300, seed=1))
    supervision = tmp_path / "COCO_supervision.txt"
    supervision.write_text(json.dumps({"10.0": {"0": list(range(5))}}))
    with pytest.raises(DataError, match=r"5 positions for 10 %.*not the same train2017"):
        write_ut_split(root, supervision, 10, 0)
    # Its percents are those of the supervision file only.
    with pytest.raises(DataError, match=rf"{supervision}: no percent '3.0' \(has \['10.0'\]\)"):
        write_ut_split(root, supervision, 3, 0)
    with pytest.raises(DataError, match=r"ut_split --data-dir .* --percent 10 --seed 0"):
        CocoStandardSplits(root, fold=0, percent=10, split="unbiased_teacher").resolve()


# ---- VOC ---------------------------------------------------------------------------------------


def voc_xml(size: tuple[int, int] | None, objects: list[tuple[str, int, tuple]]) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    objects_xml = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        "</bndbox></object>"
        for name, difficult, b in objects
    )
    return f"<annotation>{size_xml}{objects_xml}</annotation>"


@pytest.fixture
def mini_devkit(tmp_path) -> Path:
    """VOC2007: 000005 (trainval: a dog and a difficult person), 000007 (test: a car);
    VOC2012: 2008_000008 (trainval: a cat, XML without <size>)."""
    devkit = tmp_path / "VOCdevkit"
    images = {
        ("VOC2007", "trainval"): ("000005", (50, 40), [("dog", 0, (11, 6, 30, 25)),
                                                      ("person", 1, (2, 2, 9, 20))]),
        ("VOC2007", "test"): ("000007", (30, 20), [("car", 0, (1, 1, 30, 20))]),
        ("VOC2012", "trainval"): ("2008_000008", None, [("cat", 0, (5, 5, 15, 15))]),
    }  # fmt: skip
    for (year, image_set), (name, size, objects) in images.items():
        for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
            (devkit / year / folder).mkdir(parents=True, exist_ok=True)
        (devkit / year / "ImageSets" / "Main" / f"{image_set}.txt").write_text(f"{name}\n")
        (devkit / year / "Annotations" / f"{name}.xml").write_text(voc_xml(size, objects))
        Image.new("RGB", size or (24, 18)).save(devkit / year / "JPEGImages" / f"{name}.jpg")
    return devkit


def test_bad_voc_files_name_the_file_and_what_is_wrong(mini_devkit) -> None:
    from labelmatch.data.split_files.voc import parse_voc_xml, voc_to_coco

    xml = mini_devkit / "VOC2007" / "Annotations" / "000005.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<width>50</width>", "<width>abc</width>"))
    with pytest.raises(DataError, match=r"000005\.xml: <size> is not numeric"):
        parse_voc_xml(xml)
    xml.write_text(text.replace("<ymax>25</ymax>", ""))
    with pytest.raises(DataError, match=r"000005\.xml: object 0: missing <bndbox/ymax>$"):
        parse_voc_xml(xml)
    # No <size> (2008_000008) and no image to read it from
    (mini_devkit / "VOC2012" / "JPEGImages" / "2008_000008.jpg").unlink()
    with pytest.raises(DataError, match=r"2008_000008\.xml has no <size>, and its image .* cannot"):
        voc_to_coco(mini_devkit, "VOC2012", "trainval")


def test_voc_xml_becomes_coco_json_with_difficult_as_crowd(mini_devkit) -> None:
    prepare(["voc", "--devkit", str(mini_devkit)])
    splits = VocSplits(mini_devkit).resolve()
    trainval, test = read(splits.labeled_json), read(splits.val_json)
    assert [c["name"] for c in trainval["categories"]][:3] == ["aeroplane", "bicycle", "bird"]
    assert len(trainval["categories"]) == 20 and trainval["categories"] == test["categories"]
    assert trainval["images"] == [
        {"id": 5, "file_name": "VOC2007/JPEGImages/000005.jpg", "width": 50, "height": 40}
    ]
    dog, person = trainval["annotations"]
    assert (dog["category_id"], dog["bbox"], dog["iscrowd"]) == (12, [10, 5, 19, 19], 0)
    assert (person["category_id"], person["iscrowd"], person["ignore"]) == (15, 1, 1)
    assert read(mini_devkit / "annotations" / "voc07_trainval.ids.json")["labeled_image_ids"] == [5]
    unlabeled = read(splits.unlabeled_json)
    assert unlabeled["images"][0]["id"] == 2008000008
    assert (unlabeled["images"][0]["width"], unlabeled["images"][0]["height"]) == (24, 18)
    # Training reads the difficult box as crowd: not a target, counted.
    names = CategoryMap.from_coco(trainval["categories"])
    dataset = CocoDetection(splits.image_dir, splits.labeled_json, names)
    assert (dataset.report["boxes"], dataset.report["crowd"]) == (1, 1)
    # The class prior counts the difficult person too, as the official hook counts the json.
    assert (dataset.report["prior_boxes"], sum(dataset.prior_counts)) == (2, 2)


def test_cocoeval_skips_the_difficult_object(mini_devkit) -> None:
    prepare(["voc", "--devkit", str(mini_devkit)])
    trainval = mini_devkit / "annotations" / "voc07_trainval.json"
    dog = {"image_id": 5, "category_id": 12, "bbox": [10, 5, 19, 19], "score": 0.9}
    # Only the dog is detected; were the difficult person a real object, person AP would be 0
    # and the mean 0.5.
    metrics = evaluate_coco(trainval, [dog])
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["per_class"]["person"] is None
    assert metrics["per_class"]["dog"] == pytest.approx(1.0)


# ---- missing data: one DataError naming the path and the command -----------------------------


def test_coco_additional_reads_unlabeled2017_with_its_sizes_and_trains_categories(tmp_path):
    """The success path: all of train2017 labeled, image_info_unlabeled2017.json (no
    categories, no annotations) made an unlabeled split whose images live in unlabeled2017/."""
    train = synthetic_train2017(num_images=4)
    root = write_coco_dir(tmp_path / "coco", train)
    (root / "unlabeled2017").mkdir()
    info = {
        "images": [
            {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 30},
            {"id": 9, "file_name": "000000000009.jpg", "width": 24, "height": 18},
        ]
    }
    for image in info["images"]:
        Image.new("RGB", (image["width"], image["height"])).save(
            root / "unlabeled2017" / image["file_name"]
        )
    (root / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    splits = CocoAdditionalSplits(root).resolve()
    assert splits.labeled_json == root / "annotations" / "instances_train2017.json"
    assert splits.unlabeled_image_dir == root / "unlabeled2017"
    unlabeled = read(splits.unlabeled_json)
    assert unlabeled["categories"] == train["categories"] and unlabeled["annotations"] == []
    assert [(i["id"], i["width"], i["height"]) for i in unlabeled["images"]] == [
        (7, 40, 30),
        (9, 24, 18),
    ]
    names = CategoryMap.from_coco(train["categories"])
    dataset = CocoDetection(splits.unlabeled_image_dir, splits.unlabeled_json, names)
    assert len(dataset) == 2 and dataset[1][0].shape == (3, 18, 24)
    assert CocoAdditionalSplits(root).resolve() == splits  # written once, then reused


def test_missing_roots_name_the_path_and_the_prepare_command(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    cases = [
        (CocoStandardSplits(missing, fold=2, percent=5), "coco_standard --data-dir"),
        (CocoAdditionalSplits(missing), "coco_additional --data-dir"),
        (VocSplits(missing), "voc --devkit"),
    ]
    for splits, command in cases:
        with pytest.raises(DataError) as error:
            splits.resolve()
        assert str(missing) in str(error.value)
        assert f"python -m labelmatch.prepare {command} {missing}" in str(error.value)


def test_missing_pieces_inside_the_root_are_named(tmp_path, mini_devkit) -> None:
    root = write_coco_dir(tmp_path / "coco", synthetic_train2017(20))
    (root / "val2017").rmdir()
    with pytest.raises(DataError, match=rf"{root / 'val2017'} does not exist"):
        CocoStandardSplits(root).resolve()
    with pytest.raises(
        DataError, match=r"voc07_trainval.json does not exist.*prepare voc --devkit"
    ):
        VocSplits(mini_devkit).resolve()
    bad = mini_devkit / "VOC2007" / "Annotations" / "000007.xml"
    bad.write_text(bad.read_text().replace("car", "truck"))
    with pytest.raises(DataError, match=r"000007.xml: object 0: unknown class 'truck'"):
        write_voc(mini_devkit)
    with pytest.raises(SystemExit) as exit_status:  # the command: one log line, status 1
        prepare(["voc", "--devkit", str(mini_devkit)])
    assert exit_status.value.code == 1


def test_coco_splits_read_train_and_val_images_from_their_own_folders(tmp_path) -> None:
    train = synthetic_train2017(12, seed=2)
    root = write_coco_dir(tmp_path / "coco", train)
    val = {**train, "images": train["images"][:2], "annotations": []}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    for image in train["images"]:
        Image.new("RGB", (64, 48)).save(root / "train2017" / image["file_name"], format="PNG")
    for image in val["images"]:  # only val2017/ has these two as val images
        Image.new("RGB", (64, 48)).save(root / "val2017" / image["file_name"], format="PNG")
    data = DetectionDataModule(
        CocoStandardSplits(root, fold=1, percent=50), num_workers=0, test_scale=48, max_size=64
    )
    data.setup("fit")
    assert data.labeled_dataset.image_dir == data.unlabeled_dataset.image_dir == root / "train2017"
    assert data.val_dataset.image_dir == root / "val2017"
    image, _ = data.val_dataset[0]
    assert tuple(image.shape[-2:]) == (48, 64)
    assert len(data.labeled_dataset) + len(data.unlabeled_dataset) == 12


# ---- your own data: custom splits and an image folder -----------------------------------------


def write_all_json(path: Path, coco: dict) -> Path:
    path.write_text(json.dumps(coco))
    return path


def test_percent_split_draws_that_share_of_the_images_without_replacement(tmp_path, capsys):
    train = synthetic_train2017(200)
    source = write_all_json(tmp_path / "all.json", train)
    prepare(["split", "--labeled-json", str(source), "--percent", "10", "--seed", "3",
             "--out", str(tmp_path / "out")])  # fmt: skip
    labeled_path, unlabeled_path = (tmp_path / "out" / "all.3@10.json",
                                    tmp_path / "out" / "all.3@10-unlabeled.json")  # fmt: skip
    assert capsys.readouterr().out.split() == [str(labeled_path), str(unlabeled_path)]
    labeled, unlabeled = read(labeled_path), read(unlabeled_path)
    labeled_ids = [image["id"] for image in labeled["images"]]
    unlabeled_ids = [image["id"] for image in unlabeled["images"]]
    assert len(labeled_ids) == len(set(labeled_ids)) == 20  # exactly 10 %: no repeated draws
    file_order = [image["id"] for image in train["images"]]
    assert labeled_ids == [i for i in file_order if i in set(labeled_ids)]
    assert unlabeled_ids == [i for i in file_order if i not in set(labeled_ids)]
    # The unlabeled file keeps its annotations (statistics), each annotation in one file.
    assert len(labeled["annotations"]) + len(unlabeled["annotations"]) == len(train["annotations"])
    assert {a["image_id"] for a in unlabeled["annotations"]} <= set(unlabeled_ids)
    assert unlabeled["categories"] == labeled["categories"] == CATEGORIES
    sidecar = read(tmp_path / "out" / "all.3@10.ids.json")
    assert sidecar["labeled_image_ids"] == sorted(labeled_ids)
    canonical = ",".join(map(str, sorted(labeled_ids))).encode()
    assert sidecar["checksum"] == hashlib.sha256(canonical).hexdigest()
    assert (sidecar["seed"], sidecar["percent"]) == (3, 10)
    # Same seed, same split; another seed, another one.
    prepare(["split", "--labeled-json", str(source), "--percent", "10", "--seed", "3",
             "--out", str(tmp_path / "again")])  # fmt: skip
    assert read(tmp_path / "again" / "all.3@10.json") == labeled
    prepare(["split", "--labeled-json", str(source), "--percent", "10", "--seed", "4",
             "--out", str(tmp_path / "out")])  # fmt: skip
    assert read(tmp_path / "out" / "all.4@10.json")["images"] != labeled["images"]


def long_tailed_coco() -> dict:
    """60 images; "common" (id 1) on images 1-50, "rare" (id 5) on 51-53 and a crowd box on 54,
    "absent" (id 9) on none; images 55-60 without boxes."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 32} for i in range(1, 61)]
    boxes = [(i, 1, 0) for i in range(1, 51)] + [(i, 5, 0) for i in (51, 52, 53)] + [(54, 5, 1)]
    annotations = [
        {
            "id": n,
            "image_id": i,
            "category_id": c,
            "bbox": [1, 1, 8, 8],
            "area": 64,
            "iscrowd": crowd,
        }
        for n, (i, c, crowd) in enumerate(boxes, 1)
    ]
    categories = [
        {"id": 1, "name": "common"},
        {"id": 5, "name": "rare"},
        {"id": 9, "name": "absent"},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_per_class_split_labels_k_images_of_each_class_and_names_the_short_ones(tmp_path, capsys):
    source = write_all_json(tmp_path / "all.json", long_tailed_coco())
    prepare(["split", "--labeled-json", str(source), "--per-class", "5", "--seed", "0",
             "--out", str(tmp_path)])  # fmt: skip
    printed = capsys.readouterr().out
    labeled = read(tmp_path / "all.0@5per_class.json")
    unlabeled = read(tmp_path / "all.0@5per_class-unlabeled.json")
    labeled_ids = {image["id"] for image in labeled["images"]}

    def labeled_with(category_id: int) -> set[int]:
        return {a["image_id"] for a in labeled["annotations"]
                if a["category_id"] == category_id and not a["iscrowd"]}  # fmt: skip

    assert labeled_with(1) == labeled_ids - {51, 52, 53} and len(labeled_with(1)) == 5
    assert labeled_with(5) == {51, 52, 53}  # all the rare class has; its crowd box is no target
    assert len(labeled_ids) == 8 and 54 not in labeled_ids
    assert len(unlabeled["images"]) == 52
    short = read(tmp_path / "all.0@5per_class.ids.json")["classes_below_per_class"]
    assert short == [
        {"category_id": 9, "name": "absent", "labeled_images": 0, "available_images": 0},
        {"category_id": 5, "name": "rare", "labeled_images": 3, "available_images": 3},
    ]
    assert "class 'rare' (category id 5): 3 labeled images, fewer than 5" in printed
    assert "class 'absent' (category id 9): 0 labeled images" in printed


def test_per_class_split_counts_only_boxes_training_learns_from(tmp_path) -> None:
    """An `ignore=1` box is no training target (as crowd): it covered its class, so K images
    could be drawn for a class training then saw no box of."""
    coco = long_tailed_coco()
    for annotation in coco["annotations"]:
        if annotation["image_id"] in (51, 52):  # two of the rare class's three images
            annotation["ignore"] = 1
    source = write_all_json(tmp_path / "all.json", coco)
    write_custom_split(source, tmp_path, seed=0, per_class=3)
    labeled = read(tmp_path / "all.0@3per_class.json")
    assert {image["id"] for image in labeled["images"]} & {51, 52, 53} == {53}
    short = read(tmp_path / "all.0@3per_class.ids.json")["classes_below_per_class"]
    assert {"category_id": 5, "name": "rare", "labeled_images": 1, "available_images": 1} in short


def test_per_class_split_counts_images_drawn_for_rarer_classes(tmp_path) -> None:
    """Every image holds both classes: the rarer class's K draws already cover the other one."""
    coco = long_tailed_coco()
    coco["annotations"] += [
        {"id": 100 + i, "image_id": i, "category_id": 5, "bbox": [1, 1, 8, 8], "iscrowd": 0}
        for i in range(1, 51)
    ]
    source = write_all_json(tmp_path / "all.json", coco)
    prepare(["split", "--labeled-json", str(source), "--per-class", "4", "--seed", "1",
             "--out", str(tmp_path)])  # fmt: skip
    assert len(read(tmp_path / "all.1@4per_class.json")["images"]) == 4


def test_split_of_bad_input_names_the_file_and_the_record(tmp_path, caplog) -> None:
    coco = long_tailed_coco()
    coco["annotations"][7]["category_id"] = 42
    source = write_all_json(tmp_path / "all.json", coco)
    with pytest.raises(DataError, match=r"all\.json: annotation id 8: unknown category_id 42"):
        prepare_split(source, tmp_path)
    coco = long_tailed_coco()
    coco["annotations"][2]["image_id"] = 999
    write_all_json(source, coco)
    with pytest.raises(DataError, match=r"all\.json: annotation id 3: image_id 999 is not in"):
        prepare_split(source, tmp_path)
    coco = long_tailed_coco()
    coco["images"][4]["id"] = 1
    write_all_json(source, coco)
    with pytest.raises(DataError, match=r"all\.json: image id 1 appears twice"):
        prepare_split(source, tmp_path)
    write_all_json(source, long_tailed_coco())
    prepare_split(source, tmp_path)
    with pytest.raises(DataError, match=r"all\.1@50\.json exists: pass --overwrite"):
        prepare_split(source, tmp_path)
    source.write_text('{"images": [')
    with pytest.raises(SystemExit) as exit_status:  # the command: one log line, status 1
        prepare(["split", "--labeled-json", str(source), "--percent", "5", "--seed", "1",
                 "--out", str(tmp_path)])  # fmt: skip
    assert exit_status.value.code == 1
    assert f"{source}: invalid JSON at line 1" in caplog.text


def test_split_names_annotation_ids_that_are_no_integers(tmp_path) -> None:
    """An image_id [4] stopped the split with "unhashable type: 'list'", a category_id {"id":
    5} likewise; 4.0 or true (Python's 1 and 4) passed and wrote a split training refused."""
    for field, value, message in [
        ("image_id", [4], r"image_id \[4\] is not in 'images'"),
        ("image_id", 4.0, r"image_id 4\.0 is not in 'images'"),
        ("image_id", True, r"image_id True is not in 'images'"),
        ("category_id", {"id": 5}, r"unknown category_id \{'id': 5\}"),
        ("category_id", 1.0, r"unknown category_id 1\.0"),
    ]:
        coco = long_tailed_coco()
        coco["annotations"][3][field] = value
        source = write_all_json(tmp_path / "all.json", coco)
        with pytest.raises(DataError, match=rf"all\.json: annotation id 4: {message}"):
            prepare_split(source, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_checksum_of_a_json_without_integer_image_ids_names_the_record(tmp_path, caplog):
    """`checksum` stopped with KeyError: 'id' on an image record without one, and with a
    TypeError sorting "x" among integers."""
    for images, message in [
        ([{"id": 1}, {"file_name": "b.jpg"}], "image record 1 needs an integer 'id'"),
        ([{"id": 1}, {"id": "x"}], "image record 1 needs an integer 'id'"),
        ([{"id": 1}, {"id": 1}], "image id 1 appears twice"),
    ]:
        source = write_all_json(tmp_path / "split.json", {"images": images})
        with pytest.raises(SystemExit) as exit_status:
            prepare(["checksum", str(source)])
        assert exit_status.value.code == 1
        assert f"{source}: {message}" in caplog.text


def test_split_refuses_image_ids_training_cannot_read_and_writes_nothing(tmp_path, caplog):
    """Training reads integer image ids only. Mixed ids stopped the sidecar's sort with a
    TypeError after both split files were written (a rerun then found them); string ids
    wrote a split the run refused."""
    out = tmp_path / "out"
    mixed = long_tailed_coco()
    mixed["images"][3]["id"] = "4"
    for annotation in mixed["annotations"]:
        if annotation["image_id"] == 4:
            annotation["image_id"] = "4"
    source = write_all_json(tmp_path / "all.json", mixed)
    with pytest.raises(SystemExit) as exit_status:
        prepare(["split", "--labeled-json", str(source), "--percent", "50", "--seed", "1",
                 "--out", str(out)])  # fmt: skip
    assert exit_status.value.code == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"{source}: image record 3 needs an integer 'id' (training reads integer image ids "
        f"only), got {mixed['images'][3]!r}"
    ]
    assert not out.exists()
    strings = long_tailed_coco()
    for record in strings["images"] + strings["annotations"]:
        key = "id" if "file_name" in record else "image_id"
        record[key] = f"img{record[key]}"
    write_all_json(source, strings)
    with pytest.raises(DataError, match=r"all\.json: image record 0 needs an integer 'id'"):
        write_custom_split(source, out, seed=1, per_class=2)
    assert not out.exists()
    prepare_split(write_all_json(source, long_tailed_coco()), out)  # fixed: nothing in the way
    assert sorted(path.name for path in out.iterdir()) == [
        "all.1@50-unlabeled.json", "all.1@50.ids.json", "all.1@50.json"
    ]  # fmt: skip


def test_split_refuses_a_labeled_part_without_a_box_to_train_on(tmp_path, caplog) -> None:
    """5 % of 12 images is one image; seed 1 draws position 5, here an image with only a crowd
    box. The split was written ("1 labeled images (1 annotations)") and training ran on no
    labeled box."""
    coco = long_tailed_coco()
    coco["images"] = coco["images"][48:60]  # ids 49-60: 49-53 with boxes, 54 crowd, 55-60 none
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] >= 49]
    assert coco["images"][5]["id"] == 54
    source = write_all_json(tmp_path / "all.json", coco)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        prepare(["split", "--labeled-json", str(source), "--percent", "5", "--seed", "1",
                 "--out", str(out)])  # fmt: skip
    assert caplog.records[-1].getMessage() == (
        f"{source}: the 1 labeled images drawn (5 % of 12 images) have no box to train on (no "
        "annotation that is not crowd or ignore): use a larger --percent, or --per-class K, "
        "which draws K images with boxes of every class"
    )
    assert not out.exists()
    write_custom_split(source, out, seed=1, per_class=1)  # draws an image with a box
    # A json without any box to train on cannot be split either way.
    coco["annotations"] = [{**a, "ignore": 1} for a in coco["annotations"]]
    write_all_json(source, coco)
    for size in ({"percent": 50}, {"per_class": 1}):
        with pytest.raises(DataError, match=rf"{source}: no box to train on in the whole file"):
            write_custom_split(source, tmp_path / "again", seed=1, **size)
    assert not (tmp_path / "again").exists()


def test_split_percents_must_leave_both_parts_an_image(tmp_path) -> None:
    """100 is refused: no unlabeled image would be left. 96 % of 12 images rounds to all 12 and
    wrote an empty -unlabeled file; 4 % rounds to none."""
    coco = long_tailed_coco()
    coco["images"] = coco["images"][:12]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] <= 12]
    source = write_all_json(tmp_path / "all.json", coco)
    for percent in (0, -1, 100, 150):
        with pytest.raises(DataError, match=r"--percent must be in \(0, 100\)"):
            prepare_split(source, tmp_path / "out", percent=percent)
    with pytest.raises(DataError, match=rf"{source}: 96 % of its 12 images is every image"):
        prepare_split(source, tmp_path / "out", percent=96)
    with pytest.raises(DataError, match=rf"{source}: 4 % of its 12 images is no image"):
        prepare_split(source, tmp_path / "out", percent=4)
    assert not (tmp_path / "out").exists()
    prepare_split(source, tmp_path / "out", percent=95)  # 11 labeled, 1 unlabeled
    assert len(read(tmp_path / "out" / "all.1@95-unlabeled.json")["images"]) == 1
    # --per-class K with every image needed for K of each class: refused the same way
    with pytest.raises(DataError, match=rf"{source}: --per-class 50 draws every one of its 12"):
        write_custom_split(source, tmp_path / "per_class", seed=1, per_class=50)
    assert not (tmp_path / "per_class").exists()


def prepare_split(source: Path, out: Path, percent: float = 50) -> None:
    write_custom_split(source, out, seed=1, percent=percent)


def test_folder_keeps_a_linked_image_by_its_link_and_accepts_a_linked_root(tmp_path) -> None:
    from labelmatch.data.split_files.image_folder import folder_coco

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (6, 4)).save(outside / "photo.png")
    images = tmp_path / "data" / "unlabeled"
    images.mkdir(parents=True)
    (images / "linked.png").symlink_to(outside / "photo.png")  # was: "not in the subpath"
    coco = folder_coco(images, tmp_path / "data").coco
    assert [i["file_name"] for i in coco["images"]] == ["unlabeled/linked.png"]
    (tmp_path / "root-link").symlink_to(tmp_path / "data")  # --relative-to through a link
    coco = folder_coco(images, tmp_path / "root-link").coco
    assert [i["file_name"] for i in coco["images"]] == ["unlabeled/linked.png"]


def test_folder_becomes_an_unlabeled_json_read_from_image_headers(tmp_path, capsys) -> None:
    images = tmp_path / "data" / "unlabeled"
    (images / "b").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(images / "z.jpg")
    Image.new("L", (20, 50)).save(images / "b" / "a.png")
    Image.new("RGB", (7, 9)).save(images / "m.webp")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (8, 8)).save(images / "scan.bmp")  # PIL reads it, training could not
    Image.new("RGB", (8, 8)).save(images / "scan.tif")
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    frames[0].save(images / "moving.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "unlabeled.json"
    prepare(["folder", "--images", str(images), "--out", str(out)])
    printed = capsys.readouterr().out
    coco = read(out)
    assert coco["images"] == [
        {"id": 1, "file_name": "b/a.png", "width": 20, "height": 50},
        {"id": 2, "file_name": "m.webp", "width": 7, "height": 9},
        {"id": 3, "file_name": "z.jpg", "width": 40, "height": 30},
    ]
    assert coco["annotations"] == [] and "categories" not in coco
    # Each skipped file with the reason (was "not a readable image" for a valid BMP too).
    supported = "(supported: JPEG, MPO, PNG, GIF, WEBP)"
    assert printed.splitlines()[:-1] == [
        f"skipped (Truncated File Read): {images / 'broken.jpg'}",
        f"skipped (an animated GIF of 2 frames; one image per file is needed): "
        f"{images / 'moving.gif'}",
        f"skipped (not an image: PIL identifies no image format in it): {images / 'notes.txt'}",
        f"skipped (BMP files cannot be decoded for training {supported}): {images / 'scan.bmp'}",
        f"skipped (TIFF files cannot be decoded for training {supported}): {images / 'scan.tif'}",
    ]
    assert printed.splitlines()[-1] == f"{out}: 3 images, 5 files skipped"
    denied = PermissionError(errno.EACCES, "Permission denied", str(images / "z.jpg"))
    assert unreadable_reason(denied) == "Permission denied"  # the line names the file already
    # File names relative to the dataset's image_dir, when the folder is inside it.
    prepare(["folder", "--images", str(images), "--out", str(out), "--relative-to",
             str(tmp_path / "data"), "--overwrite"])  # fmt: skip
    assert [i["file_name"] for i in read(out)["images"]] == [
        "unlabeled/b/a.png", "unlabeled/m.webp", "unlabeled/z.jpg"
    ]  # fmt: skip
    # The training data pipeline reads it as an unlabeled split.
    names = CategoryMap.from_coco(CATEGORIES)
    dataset = CocoDetection(tmp_path / "data", out, names)
    assert len(dataset) == 3


def test_folder_excludes_the_images_other_jsons_list_matched_by_path(tmp_path, capsys) -> None:
    """`folder` over the whole image root listed the labeled and val images too, and the val
    images leaked into the unlabeled set. --exclude leaves out what the jsons list, by the path
    the loaders read: file name joined to --relative-to, normalised."""
    root = tmp_path / "images"
    for name in ("train/a.jpg", "train/b.jpg", "train/c.jpg", "val/v.jpg", "extra/e.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(root / name)
    record = {"width": 8, "height": 6}
    labeled = write_all_json(tmp_path / "labeled.json", {
        "images": [{"id": 1, "file_name": "train/a.jpg", **record},
                   {"id": 2, "file_name": "./train//b.jpg", **record}],
        "annotations": [], "categories": CATEGORIES,
    })  # fmt: skip
    val = write_all_json(tmp_path / "val.json", {
        "images": [{"id": 1, "file_name": str(root / "val" / "v.jpg"), **record},  # absolute
                   {"id": 2, "file_name": "train/../elsewhere/w.jpg", **record}],
        "annotations": [], "categories": CATEGORIES,
    })  # fmt: skip
    out = tmp_path / "unlabeled.json"
    prepare(["folder", "--images", str(root), "--out", str(out),
             "--exclude", str(labeled), str(val)])  # fmt: skip
    assert [image["file_name"] for image in read(out)["images"]] == ["extra/e.png", "train/c.jpg"]
    assert capsys.readouterr().out.splitlines() == [
        f"excluded 2 of the 2 images of {labeled}",
        f"excluded 1 of the 2 images of {val}",
        f"{out}: 2 images, 0 files skipped",
    ]
    # A subfolder with the same --relative-to: the same file names; a json of another
    # image_dir excludes nothing, and says where its names were looked for.
    prepare(["folder", "--images", str(root / "train"), "--relative-to", str(root), "--out",
             str(out), "--overwrite", "--exclude", str(labeled)])  # fmt: skip
    assert [image["file_name"] for image in read(out)["images"]] == ["train/c.jpg"]
    prepare(["folder", "--images", str(root / "train"), "--out", str(out), "--overwrite",
             "--exclude", str(labeled)])  # fmt: skip
    assert len(read(out)["images"]) == 3
    assert capsys.readouterr().out.splitlines()[-2] == (
        f"excluded 0 of the 2 images of {labeled} (none under --images; its file names are "
        f"read relative to {root / 'train'})"
    )
    # Every image excluded; an --exclude json that cannot be read: an error, nothing written.
    rest = write_all_json(tmp_path / "c.json", {"images": [{"file_name": "train/c.jpg"}]})
    with pytest.raises(DataError, match=r"among its 3 files, 3 of them excluded"):
        write_folder_coco(root / "train", tmp_path / "none.json", root, exclude=[labeled, rest])
    (tmp_path / "bad.json").write_text('{"images": [{"id": 1}]}')
    for exclude, problem in [
        (tmp_path / "missing.json", f"--exclude {tmp_path / 'missing.json'}: annotation file does"),
        (tmp_path / "bad.json", f"--exclude {tmp_path / 'bad.json'}: image record 0 needs a "
                                "string 'file_name', got {'id': 1}"),
    ]:  # fmt: skip
        with pytest.raises(DataError) as error:
            write_folder_coco(root, tmp_path / "none.json", exclude=[labeled, exclude])
        assert str(error.value).startswith(problem)
    assert not (tmp_path / "none.json").exists()
    # A json whose image_dir is a link to the folder: the same files, excluded
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    prepare(["folder", "--images", str(tmp_path / "link"), "--out", str(out), "--overwrite",
             "--exclude", str(labeled), str(val)])  # fmt: skip
    assert [image["file_name"] for image in read(out)["images"]] == ["extra/e.png", "train/c.jpg"]


def test_folder_without_images_or_outside_relative_to_is_an_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("#")
    with pytest.raises(DataError, match=r"no readable image among its 1 files"):
        write_folder_coco(tmp_path / "empty", tmp_path / "out.json")
    with pytest.raises(DataError, match=r"--images .*nowhere: no such folder"):
        write_folder_coco(tmp_path / "nowhere", tmp_path / "out.json")
    with pytest.raises(DataError, match=r"--relative-to .*other does not contain --images"):
        write_folder_coco(tmp_path / "empty", tmp_path / "out.json", relative_to=tmp_path / "other")
