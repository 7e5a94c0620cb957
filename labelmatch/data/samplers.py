"""Endless index streams for iteration-based training."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class InfiniteSampler(Sampler[int]):
    """Endless stream of dataset indices; each rank takes a disjoint strided share.

    The global stream is pass 0's order, then pass 1's, ...; pass p's order is a permutation
    drawn from a generator seeded with `seed + p` (or 0..n-1 when `shuffle=False`). Rank r
    yields the global positions r, r + world_size, r + 2 world_size, ..., so ranks never
    repeat each other and every rank gets indices even when the dataset is smaller than
    `world_size`.

    State is (`pass_index`, `position`): the pass and the position in it that this rank
    hands out next. It advances as indices are handed out, i.e. a DataLoader's prefetched
    batches count as consumed. One iterator at a time: a new `iter()` continues the stream.
    There is deliberately no `__len__` (training is counted in iterations).
    """

    def __init__(
        self,
        dataset_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset, got size {dataset_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.dataset_size = dataset_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pass_index = 0
        self.position = rank

    def _order(self, pass_index: int) -> torch.Tensor:
        """All indices in pass `pass_index`'s order, int64 [dataset_size]."""
        if not self.shuffle:
            return torch.arange(self.dataset_size)
        generator = torch.Generator().manual_seed(self.seed + pass_index)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        while True:
            order = self._order(self.pass_index).tolist()
            while self.position < self.dataset_size:
                index = order[self.position]
                self.position += self.world_size
                yield index
            # The stride carries over the pass boundary of the global stream.
            self.position -= self.dataset_size
            self.pass_index += 1

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index = int(state["pass_index"])
        self.position = int(state["position"])
