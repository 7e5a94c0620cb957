"""copied_files: copies of a file under other names, found by their bytes (shared_images.py)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from labelmatch.data import shared_images
from labelmatch.data.shared_images import copied_files

HEAD = 64 * 1024


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _spies():
    """size_of and digest that count what they are asked of each file."""
    sizes, digests = shared_images._file_sizes(), shared_images._digests()
    asked: Counter = Counter()

    def size_of(path):
        asked["stat", path] += 1
        return sizes(path)

    def digest(path, limit):
        asked["head" if limit is not None else "whole", path] += 1
        return digests(path, limit)

    return size_of, digest, asked


def test_copies_past_the_head_are_told_apart_by_the_whole_file(tmp_path: Path) -> None:
    """Files over 64 KiB that differ only after it share a head digest: the whole file decides."""
    body = os.urandom(HEAD + 1000)
    original = _write(tmp_path / "val.jpg", body)
    copy = _write(tmp_path / "copy.jpg", body)
    late = bytearray(body)
    late[-1] ^= 0xFF  # the same size and head, another image
    other = _write(tmp_path / "other.jpg", bytes(late))
    assert copied_files([original], [other, copy]) == [(original, copy)]
    assert copied_files([original], [other]) == []
    assert copied_files([original], [original]) == []  # the same path is not a copy of itself


def test_only_files_of_a_shared_size_are_read(tmp_path: Path) -> None:
    """A file is read only where another has its size, its head only where a head matches."""
    a = _write(tmp_path / "a.png", b"x" * 100)
    lone = _write(tmp_path / "lone.png", b"y" * 50)  # no other of its size
    b = _write(tmp_path / "b.png", b"z" * 100)  # a's size, other bytes
    c = _write(tmp_path / "c.png", b"x" * 100)  # a's copy
    unreadable = str(tmp_path / "gone.png")
    size_of, digest, asked = _spies()
    assert copied_files([a, lone, unreadable], [b, c], size_of, digest) == [(a, c)]
    assert ("head", lone) not in asked and ("whole", lone) not in asked
    assert ("whole", b) not in asked  # its head already differs from a's
    assert all(count == 1 for (kind, _), count in asked.items() if kind != "stat")


def test_many_files_of_one_size_are_read_once_each(tmp_path: Path) -> None:
    """Equal sizes, different bytes (fixed-size images): each file's head is read once, not once
    per pair; the join stays linear."""
    files = [_write(tmp_path / f"val{n}.bin", os.urandom(256)) for n in range(60)]
    others = [_write(tmp_path / f"train{n}.bin", os.urandom(256)) for n in range(60)]
    size_of, digest, asked = _spies()
    assert copied_files(files, others, size_of, digest) == []
    heads = [count for (kind, _), count in asked.items() if kind == "head"]
    assert len(heads) == 120 and set(heads) == {1}
    assert not any(kind == "whole" for kind, _ in asked)
