"""Endless, reproducible streams of draws for iteration-based training.

A draw is a dataset index plus the seed of its random augmentation. Both are pure functions of
(run seed, stream, position in the stream), so a resumed run re-creates the stream from the
number of draws already consumed (the trainer's step x batch size) and gets the very same images
with the very same augmentation, however many batches the loader workers had prefetched and
however many workers there are (the same pixels bit for bit at one thread count per process:
the main process's several threads round a few float operations of a view differently from a
worker's one, by about 1e-6).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# How the streams are seeded, saved in checkpoints (the data module's state): 1 until 2026-12-05
# (pass p's order seeded `seed + p`, the unlabeled stream `seed + 1`, the reference subsets by
# the step alone: correlated across seeds), 2 since (`stream_seed`'s SeedSequence branches).
STREAM_SEEDING = 2


class Stream(IntEnum):
    """The random streams of a run, each its own branch of the run's seed (`stream_seed`)."""

    LABELED = 0
    UNLABELED = 1
    REFERENCE = 2  # the ACT refresh's unlabeled subset
    REFERENCE_LABELED = 3  # the estimated prior's calibration subset
    SHIFT_TEST = 4  # the estimated prior's shift test: its bootstrap resamples


class Draw(NamedTuple):
    """One sample of a stream: which image, and the seed of its augmentation."""

    index: int
    seed: int


def stream_seed(seed: int, stream: Stream, *key: int) -> int:
    """A 32-bit seed for one use (`key`) of one stream of the run seeded `seed`.

    SeedSequence's spawn keys give independent branches: different seeds, streams or keys share
    no draws. (Sums such as `seed + pass` did: seed 0's second pass was seed 1's first.)
    """
    return int(np.random.SeedSequence(seed, spawn_key=(int(stream), *key)).generate_state(1)[0])


_ORDER, _AUGMENTATION = 0, 1  # the two uses of a training stream's seed


class InfiniteSampler(Sampler[Draw]):
    """Endless stream of `Draw`s; each rank takes a disjoint strided share.

    The global stream is pass 0's order, then pass 1's, ...; pass p's order is a permutation
    drawn from a generator seeded with `stream_seed(seed, stream, _ORDER, p)` (or 0..n-1 when
    `shuffle=False`). Global position g draws image `order_p[g mod n]` (p = g div n) with
    augmentation seed `stream_seed(seed, stream, _AUGMENTATION, g)`. Rank r yields the global
    positions r, r + W, r + 2W, ... (W the world size), so ranks never repeat each other and
    every rank gets indices even when the dataset is smaller than W. `start` is where the
    stream resumes: the draws all ranks together have taken (a global position; the rank then
    yields start + r, start + r + W, ...), so a run resumed on another number of processes
    neither repeats nor skips images.
    There is deliberately no `__len__` (training is counted in iterations).
    """

    def __init__(
        self,
        dataset_size: int,
        shuffle: bool = True,
        seed: int = 0,
        stream: Stream = Stream.LABELED,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset, got size {dataset_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.dataset_size = dataset_size
        self.shuffle = shuffle
        self.seed = seed
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.start = start

    def _order(self, pass_index: int) -> list[int]:
        """All indices in pass `pass_index`'s order."""
        if not self.shuffle:
            return list(range(self.dataset_size))
        generator = torch.Generator()
        generator.manual_seed(stream_seed(self.seed, self.stream, _ORDER, pass_index))
        return torch.randperm(self.dataset_size, generator=generator).tolist()

    def augmentation_seed(self, position: int) -> int:
        """The augmentation seed of global stream position `position`."""
        return stream_seed(self.seed, self.stream, _AUGMENTATION, position)

    def __iter__(self) -> Iterator[Draw]:
        position = self.start + self.rank
        pass_index, order = -1, []
        while True:
            current_pass, offset = divmod(position, self.dataset_size)
            if current_pass != pass_index:
                pass_index, order = current_pass, self._order(current_pass)
            yield Draw(order[offset], self.augmentation_seed(position))
            position += self.world_size


class SeededDraws(Dataset):
    """`dataset[draw.index]` with the torch RNG seeded by `draw.seed` for that one sample.

    The transforms draw from the global torch RNG (torchvision's v2 transforms take no
    generator); forking it keeps the caller's RNG untouched, so the model's own random
    sampling (RPN/ROI proposal sampling) does not depend on the data either.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: Draw) -> Any:
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone: torch.manual_seed would reseed the GPUs' too, which
            # fork_rng(devices=[]) does not restore (the transforms draw on the CPU).
            torch.default_generator.manual_seed(draw.seed)
            return self.dataset[draw.index]
