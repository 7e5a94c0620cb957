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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from labelmatch.data.coco import is_integer

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
) -> dict[str, Any]:
    """COCO bbox metrics of ``results`` against the ground truth in ``gt_json``.

    Every image of ``gt_json`` is evaluated (an image without results counts its objects as
    missed); results on images that ``gt_json`` does not contain are left out and counted in a
    warning.

    Args:
        gt_json: COCO annotation file (category ids need not be contiguous).
        results: COCO results, e.g. from :func:`to_coco_results`; not modified.
        class_names: one name per ground-truth category, in increasing category-id order (the
            order of the model's labels 1..C); default: the names in ``gt_json``.

    Returns:
        ``{"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"}`` as
        floats in [0, 1] (pycocotools' -1 where an area range has no ground truth), and
        ``"per_class": {name: AP@[.5:.95] or None if the class has no ground truth}``.
    """
    ground_truth = _load_ground_truth(*_cache_key(gt_json))
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
def _load_ground_truth(path: str, mtime_ns: int) -> COCO:
    """The pycocotools index of ``path``; cached per (path, modification time) because the same
    validation file is evaluated many times per run. ``mtime_ns`` is only part of the key.

    Many COCO-format files written by annotation tools hold boxes only. An annotation without
    ``area`` is scored with its box's area (w x h, what pycocotools' ``loadRes`` gives each
    detection; it decides only the small / medium / large split), one without ``iscrowd`` as
    not crowd (0, as the training reader reads it), one without a positive integer ``id`` is
    numbered after the file's largest id (COCOeval marks a matched ground truth by its id, so
    one of id 0 counted its detection a false positive); all counted in one warning. One
    without ``image_id``, ``category_id`` or ``bbox`` is an error (the data module refuses those
    first)."""
    with open(path) as file:
        dataset = json.load(file)
    annotations = dataset.get("annotations", [])
    filled = {"area": 0, "iscrowd": 0, "id": 0}

    def positive_id(annotation: dict) -> bool:
        return is_integer(annotation.get("id")) and annotation["id"] > 0

    next_id = 1 + max((a["id"] for a in annotations if positive_id(a)), default=0)
    for position, annotation in enumerate(annotations):
        missing = [key for key in _GT_ANNOTATION_KEYS if key not in annotation]
        if missing:
            raise ValueError(
                f"{path}: annotation {position} (id {annotation.get('id')}) lacks {missing}, "
                "which COCO bbox evaluation needs"
            )
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
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


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
