"""Progress bars for the passes Lightning's own bar does not cover (ACT refresh, burn-in and CLI
evaluation, prediction): tqdm on rank zero when stderr is a terminal, silent otherwise (logs of
batch jobs stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

from labelmatch.data.datamodule import distributed_rank_and_world_size

T = TypeVar("T")


def progress(iterable: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    rank, _ = distributed_rank_and_world_size()
    return tqdm(
        iterable,
        desc=description,
        total=total,
        leave=False,
        dynamic_ncols=True,
        disable=rank != 0 or not sys.stderr.isatty(),
    )
