"""COCO bbox evaluation with pycocotools: detections -> COCO results -> AP metrics.

The numbers are pycocotools' own (``COCOeval`` with ``iouType="bbox"``); this module only converts
the detector's output into COCO's results format, hides pycocotools' printing, handles the empty
case pycocotools rejects, and reads per-class AP out of ``COCOeval.eval["precision"]``.
"""

import contextlib
import copy
import functools
import io
import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from labelmatch.data.coco import is_coco_box, is_integer, load_coco_json

log = logging.getLogger(__name__)

# Positions in COCOeval.stats (see COCOeval.summarize): AP@[.5:.95], AP50, AP75, AP by area,
# then AR@1, AR@10, AR@100. pycocotools reports -1 where the area range has no ground truth.
STAT_INDEX = dict(map=0, map_50=1, map_75=2, map_small=3, map_medium=4, map_large=5, mar_100=8)

# Keys of a ground-truth annotation that COCOeval reads for bbox evaluation and that have no
# default (`area`, `iscrowd` and `id` do: `_load_ground_truth`).
_GT_ANNOTATION_KEYS = ("image_id", "category_id", "bbox")


def to_coco_results(
    predictions: list[dict[str, Any]], category_ids: Tensor | Sequence[int]
) -> list[dict[str, Any]]:
    """Detections -> COCO results (one dict per box).

    Args:
        predictions: per image ``dict(image_id=int, boxes=Tensor[N, 4] xyxy in original image
            pixels, scores=Tensor[N], labels=int64 Tensor[N] in 1..C)``.
        category_ids: ``[C]``, the COCO category id of each label (index ``label - 1``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``; coordinates are
        rounded to 0.01 px and scores to 1e-6 (below float32 resolution of scores in [0, 1]).
    """
    id_of_label = torch.as_tensor(category_ids, dtype=torch.int64).cpu()
    results = []
    for prediction in predictions:
        image_id = int(prediction["image_id"])
        boxes = prediction["boxes"].detach().cpu().to(torch.float64).reshape(-1, 4)
        scores = prediction["scores"].detach().cpu().to(torch.float64).reshape(-1)
        labels = prediction["labels"].detach().cpu().to(torch.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image_id {image_id}: {len(boxes)} boxes, {len(scores)} scores and "
                f"{len(labels)} labels; expected one of each per detection"
            )
        invalid = (labels < 1) | (labels > len(id_of_label))
        if invalid.any():
            raise ValueError(
                f"image_id {image_id}: labels {labels[invalid].unique().tolist()} outside "
                f"1..{len(id_of_label)} (the {len(id_of_label)} foreground classes)"
            )
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        for bbox, score, category_id in zip(
            xywh.tolist(), scores.tolist(), id_of_label[labels - 1].tolist()
        ):
            results.append(
                dict(
                    image_id=image_id,
                    category_id=category_id,
                    bbox=[round(v, 2) for v in bbox],
                    score=round(score, 6),
                )
            )
    return results


def write_results(path: str | Path, results: list[dict[str, Any]]) -> None:
    """Write COCO results (as from :func:`to_coco_results`) to a json file, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        json.dump(results, file)


def evaluate_coco(
    gt_json: str | Path,
    results: list[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    image_ids: Collection[int] | None = None,
) -> dict[str, Any]:
    """COCO bbox metrics of ``results`` against the ground truth in ``gt_json``.

    The images of ``image_ids`` are evaluated, every image of ``gt_json`` when it is None (an
    evaluated image without results counts its objects as missed); results on images that
    ``gt_json`` does not contain are left out and counted in a warning.

    Args:
        gt_json: COCO annotation file (category ids need not be contiguous).
        results: COCO results, e.g. from :func:`to_coco_results`; not modified.
        class_names: one name per ground-truth category, in increasing category-id order (the
            order of the model's labels 1..C); default: the names in ``gt_json``.
        image_ids: the images the model ran on (validation passes the ids of its
            predictions). The images of ``gt_json`` it leaves out, those the val loader skipped
            (``data.skip_invalid``) or did not reach (a limited validation), are counted in a
            warning and not scored: scored, their objects would count as missed. Ids that are
            no image of ``gt_json`` are ignored; none at all that is one is an error.

    Returns:
        ``{"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"}`` as
        floats in [0, 1] (pycocotools' -1 where an area range has no ground truth), and
        ``"per_class": {name: AP@[.5:.95] or None if the class has no ground truth}``.
    """
    ground_truth, problems = _load_ground_truth(*_cache_key(gt_json))
    scored = _scored_images(ground_truth, image_ids, gt_json)
    for image_id in scored:
        if image_id in problems:
            raise ValueError(f"{gt_json}: {problems[image_id]}")
    category_ids = sorted(ground_truth.getCatIds())
    names = _class_names(ground_truth, category_ids, class_names, gt_json)
    results = _results_on_known_images(results, ground_truth, gt_json)
    unknown_categories = {r["category_id"] for r in results} - set(category_ids)
    if unknown_categories:
        raise ValueError(
            f"results use category ids {sorted(unknown_categories)} that {gt_json} does not "
            f"define (its ids: {category_ids})"
        )

    with contextlib.redirect_stdout(io.StringIO()) as printed:
        detections = _results_coco(ground_truth, results)
        evaluator = COCOeval(ground_truth, detections, iouType="bbox")
        evaluator.params.imgIds = scored
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval on %s:\n%s", gt_json, printed.getvalue())

    metrics: dict[str, Any] = {
        name: float(evaluator.stats[index]) for name, index in STAT_INDEX.items()
    }
    per_class_ap = per_class_average_precision(evaluator.eval["precision"])
    metrics["per_class"] = dict(zip(names, per_class_ap))
    return metrics


def per_class_average_precision(precision: np.ndarray) -> list[float | None]:
    """AP@[.5:.95] per category from ``COCOeval.eval["precision"]``, as Detectron2 computes it.

    Args:
        precision: ``[T, R, K, A, M]`` (IoU thresholds, recall thresholds, categories, area
            ranges, max detections); -1 marks entries without ground truth.

    Returns:
        ``[K]``: the mean over valid entries at area "all" (index 0) and the largest
        max-detections setting (index -1, i.e. 100), or None for a category without ground truth.
    """
    per_class = []
    for k in range(precision.shape[2]):
        values = precision[:, :, k, 0, -1]
        valid = values[values > -1]
        per_class.append(float(valid.mean()) if valid.size else None)
    return per_class


def _cache_key(gt_json: str | Path) -> tuple[str, int]:
    path = Path(gt_json).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth annotation file {path} does not exist")
    return str(path), path.stat().st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load_ground_truth(path: str, mtime_ns: int) -> tuple[COCO, dict[int, str]]:
    """The pycocotools index of ``path``, and per image id what makes its ground truth
    unscoreable; cached per (path, modification time) because the same validation file is
    evaluated many times per run. ``mtime_ns`` is only part of the key.

    Read as the data module reads it (`load_coco_json`: UTF-8 with or without a byte-order
    mark, a bad file named). Many COCO-format files written by annotation tools hold boxes
    only. An annotation without ``area`` is scored with its box's area (w x h, what
    pycocotools' ``loadRes`` gives each detection; it decides only the small / medium / large
    split), one without ``iscrowd`` as not crowd (0, as the training reader reads it), one
    without a positive integer ``id`` is numbered after the file's largest id (COCOeval marks a
    matched ground truth by its id, so one of id 0 counted its detection a false positive); all
    counted in one warning. One without ``category_id`` or ``bbox``, or whose ``bbox`` is not 4
    finite numbers, is left out of the index and its image marked unscoreable (`evaluate_coco`
    stops if it is asked to score that image: the data module refuses such a record first, or
    with ``data.skip_invalid`` drops its image); one of no image of the file is left out (the
    data module counts it as skipped), both counted in a warning."""
    dataset = load_coco_json(path)
    images = {image.get("id") for image in dataset["images"] if isinstance(image, dict)}
    annotations, problems, foreign = [], {}, 0
    for position, annotation in enumerate(dataset.get("annotations", [])):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not (is_integer(image_id) and image_id in images):
            foreign += 1
            continue
        missing = [key for key in _GT_ANNOTATION_KEYS if key not in annotation]
        if missing:
            problem = f"lacks {missing}, which COCO bbox evaluation needs"
        elif not is_coco_box(annotation["bbox"]):
            problem = f"bbox must be 4 finite numbers, got {annotation['bbox']!r}"
        else:
            annotations.append(annotation)
            continue
        problems.setdefault(
            image_id, f"annotation {position} (id {annotation.get('id')}) {problem}"
        )
    filled = {"area": 0, "iscrowd": 0, "id": 0}

    def positive_id(annotation: dict) -> bool:
        return is_integer(annotation.get("id")) and annotation["id"] > 0

    next_id = 1 + max((a["id"] for a in annotations if positive_id(a)), default=0)
    for annotation in annotations:
        if "area" not in annotation:
            annotation["area"] = float(annotation["bbox"][2]) * float(annotation["bbox"][3])
            filled["area"] += 1
        if "iscrowd" not in annotation:
            annotation["iscrowd"] = 0
            filled["iscrowd"] += 1
        if not positive_id(annotation):
            annotation["id"], next_id = next_id, next_id + 1
            filled["id"] += 1
    if any(filled.values()):
        log.warning(
            "%s: of %d annotations, %d without 'area' are scored with their box's area (w x h), "
            "%d without 'iscrowd' as not crowd, %d without a positive 'id' numbered after the "
            "others",
            path, len(annotations), filled["area"], filled["iscrowd"], filled["id"],
        )  # fmt: skip
    if foreign or problems:
        log.warning(
            "%s: %d annotations of no image of the file are left out, and %d images whose "
            "annotations COCO bbox evaluation cannot read are not scored (e.g. %s)",
            path, foreign, len(problems), next(iter(problems.values()), "none"),
        )  # fmt: skip
    dataset["annotations"] = annotations
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth, problems


def _scored_images(
    ground_truth: COCO, image_ids: Collection[int] | None, gt_json: str | Path
) -> list[int]:
    """The ids of the images of ``gt_json`` to score (`evaluate_coco`), sorted."""
    every = sorted(ground_truth.getImgIds())
    if image_ids is None:
        return every
    scored = sorted(set(every) & set(image_ids))
    if not scored:
        raise ValueError(
            f"none of the {len(set(image_ids))} image ids to score is an image of {gt_json}"
        )
    if len(scored) < len(every):
        left_out = sorted(set(every) - set(scored))
        log.warning(
            "evaluate_coco: scored %d of the %d images of %s; %d were not predicted (skipped "
            "by data.skip_invalid, or outside a limited validation) and are not scored (e.g. %s)",
            len(scored), len(every), gt_json, len(left_out), left_out[:5],
        )  # fmt: skip
    return scored


def _class_names(
    ground_truth: COCO,
    category_ids: list[int],
    class_names: Sequence[str] | None,
    gt_json: str | Path,
) -> list[str]:
    if class_names is None:
        return [ground_truth.cats[category_id]["name"] for category_id in category_ids]
    if len(class_names) != len(category_ids):
        raise ValueError(
            f"{len(class_names)} class names given but {gt_json} defines "
            f"{len(category_ids)} categories (ids {category_ids})"
        )
    return list(class_names)


def _results_on_known_images(
    results: list[dict[str, Any]], ground_truth: COCO, gt_json: str | Path
) -> list[dict[str, Any]]:
    known_images = set(ground_truth.getImgIds())
    kept = [r for r in results if r["image_id"] in known_images]
    if len(kept) < len(results):
        foreign = {r["image_id"] for r in results} - known_images
        log.warning(
            "evaluate_coco: left out %d of %d results on %d image ids not in %s (e.g. %s)",
            len(results) - len(kept),
            len(results),
            len(foreign),
            gt_json,
            sorted(foreign)[:5],
        )
    return kept


def _results_coco(ground_truth: COCO, results: list[dict[str, Any]]) -> COCO:
    """pycocotools' index of ``results``.

    ``loadRes`` adds keys to the dicts it is given, so it gets shallow copies (it never modifies
    the bbox lists). It fails on an empty list; then an empty index over the same images is
    built, and every ground-truth object counts as missed (AP 0).
    """
    if results:
        return ground_truth.loadRes([dict(r) for r in results])
    empty = COCO()
    empty.dataset = dict(
        images=list(ground_truth.dataset["images"]),
        categories=copy.deepcopy(ground_truth.dataset["categories"]),
        annotations=[],
    )
    empty.createIndex()
    return empty
