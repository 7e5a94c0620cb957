"""Images two splits share: the same file (links resolved) or a copy of it under another name.

A val image that training also sees (labeled, or unlabeled, where the teacher pseudo-labels it)
is no held-out image, and its score is no held-out score; a labeled image in the unlabeled split
is pseudo-labelled besides its own labels (the paper's splits keep them apart). Both are warned
of at set-up, naming the files. Copies are found by their bytes: equal sizes first (one `stat` a
file), then the digest of their first 64 KiB, then of the whole file, so only files of equal
size are read. A copy re-encoded or resized is another file to this check.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_HEAD = 64 * 1024  # bytes read first: different images of equal size differ within them


class Split(Protocol):
    """What the check reads of a dataset (`CocoDetection`)."""

    ann_file: object
    image_files: list[str]  # each record's file, links resolved

    def __len__(self) -> int: ...


def warn_of_shared_images(labeled: Split, unlabeled: Split | None, val: Split) -> None:
    """Log a warning for each pair of splits that shares files or copies of files."""
    pairs = [("val", val, "labeled", labeled)]
    if unlabeled is not None:
        pairs += [
            ("val", val, "unlabeled", unlabeled),
            ("labeled", labeled, "unlabeled", unlabeled),
        ]
    size_of, digest = _file_sizes(), _digests()
    for name, split, other_name, other in pairs:
        held_out = "the val score is not a held-out score" if name == "val" else (
            "they are pseudo-labelled besides their own labels"
        )  # fmt: skip
        shared = sorted(set(split.image_files) & set(other.image_files))
        if shared:
            logger.warning(
                "%d of the %d %s images (%s) are also %s images (%s), e.g. %s: %s",
                len(shared), len(split), name, split.ann_file, other_name, other.ann_file,
                ", ".join(shared[:3]), held_out,
            )  # fmt: skip
        copies = copied_files(split.image_files, other.image_files, size_of, digest)
        if copies:
            logger.warning(
                "%d of the %d %s images (%s) have a copy (the same bytes under another name) "
                "among the %s images (%s), e.g. %s: %s",
                len(copies), len(split), name, split.ann_file, other_name, other.ann_file,
                ", ".join(f"{a} = {b}" for a, b in copies[:3]), held_out,
            )  # fmt: skip


SizeOf = Callable[[str], "int | None"]
Digest = Callable[[str, "int | None"], "str | None"]


def copied_files(
    files: Sequence[str],
    others: Iterable[str],
    size_of: SizeOf | None = None,
    digest: Digest | None = None,
) -> list[tuple[str, str]]:
    """(file, other) for each of `files` with a byte-identical file among `others` under
    another path (the first in `others`' order), in the order of `files`. Unreadable files are
    skipped (the datasets report them). A join on size, then the head's digest, then the whole
    file's, each index built once: a file is read only where another has its size (its head)
    and its head too (the whole). `size_of` and `digest` memoise across calls (`_file_sizes`,
    `_digests`)."""
    size_of, digest = size_of or _file_sizes(), digest or _digests()
    by_size = _grouped(dict.fromkeys(others), size_of)
    by_head: dict[int, dict] = {}  # size -> head digest -> others, built when first needed
    by_whole: dict[tuple, dict] = {}  # (size, head digest) -> file digest -> others
    copies = []
    for path in dict.fromkeys(files):
        size = size_of(path)
        if size not in by_size:
            continue
        if size not in by_head:
            by_head[size] = _grouped(by_size[size], lambda other: digest(other, _HEAD))
        head = digest(path, _HEAD)
        if head not in by_head[size]:
            continue
        if (size, head) not in by_whole:
            by_whole[size, head] = _grouped(by_head[size][head], lambda o: digest(o, None))
        same = by_whole[size, head].get(digest(path, None), [])
        match = next((other for other in same if other != path), None)
        if match is not None:
            copies.append((path, match))
    return copies


def _grouped(paths: Iterable[str], key_of: Callable[[str], Any]) -> dict[Any, list[str]]:
    """`paths` grouped by `key_of`, in order; those whose key is None (unreadable) left out."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for path in paths:
        key = key_of(path)
        if key is not None:
            groups[key].append(path)
    return groups


def _file_sizes() -> SizeOf:
    """A memoised `path -> size in bytes` (None where the file cannot be read)."""

    @cache
    def size_of(path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    return size_of


def _digests() -> Digest:
    """A memoised `(path, first n bytes or None for all) -> SHA-1` (None if unreadable)."""

    @cache
    def digest(path: str, limit: int | None) -> str | None:
        sha = hashlib.sha1(usedforsecurity=False)
        try:
            with open(path, "rb") as file:
                if limit is not None:
                    sha.update(file.read(limit))
                else:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        sha.update(block)
        except OSError:
            return None
        return sha.hexdigest()

    return digest
