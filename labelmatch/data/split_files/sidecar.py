"""The sidecar of a split: its labeled image ids and their checksum, to verify a split across
codebases.

Every labeled json that `labelmatch.prepare` writes, `X.json`, gets `X.ids.json` beside it. The
checksum depends only on the set of labeled image ids, not on their order or on the file's
bytes, so the same labeled set written by STAC, MMDetection or Unbiased Teacher tooling has the
same checksum: `sha256(",".join(str(i) for i in sorted(ids)))`, hex.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labelmatch.data.coco import load_coco_json
from labelmatch.data.split_files.files import check_image_ids, write_json_atomic


def labeled_ids_checksum(image_ids: Iterable[int]) -> str:
    """sha256 (hex) of the sorted, comma-joined decimal image ids."""
    canonical = ",".join(str(image_id) for image_id in sorted(set(image_ids)))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sidecar_path(labeled_json: str | os.PathLike) -> Path:
    """`X.json` -> `X.ids.json`."""
    labeled_json = Path(labeled_json)
    return labeled_json.with_name(labeled_json.name.removesuffix(".json") + ".ids.json")


def sidecar_content(
    labeled_json: Path, labeled_coco: dict, provenance: dict[str, Any]
) -> dict[str, Any]:
    """The sidecar of `labeled_json` (whose contents are `labeled_coco`).

    `provenance` says how the split was made (source file, sampler, seed, percent, ...).
    """
    image_ids = sorted(image["id"] for image in labeled_coco["images"])
    return {
        "labeled_json": labeled_json.name,
        **provenance,
        "num_labeled_images": len(image_ids),
        "checksum": labeled_ids_checksum(image_ids),
        "checksum_of": "sha256 of the sorted labeled image ids joined by ','",
        "labeled_image_ids": image_ids,
    }


def write_sidecar(labeled_json: Path, labeled_coco: dict, provenance: dict[str, Any]) -> Path:
    """Write the sidecar of `labeled_json` (`sidecar_content`); returns its path."""
    path = sidecar_path(labeled_json)
    write_json_atomic(path, sidecar_content(labeled_json, labeled_coco, provenance))
    return path


def read_checksum(path: str | os.PathLike) -> str:
    """Checksum of the image ids of any COCO json (e.g. a split written by another codebase)."""
    coco = load_coco_json(path, require_categories=False)
    return labeled_ids_checksum(check_image_ids(coco, Path(path)))
