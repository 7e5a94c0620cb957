"""Rows of many images in one tensor: the per-image parts of a step done for the batch at once.

The method's per-image work (splitting detections, moving boxes between views, finding each
kind of proposal for ROI sampling, mining the uncertain rows) concatenates the rows of all images,
decides them together and splits them back. (ROI sampling's random draws stay per image: drawing
for the whole batch would change the random stream.)
A GPU then runs a few kernels instead of a few per image, and the host waits for it once per
split instead of once per boolean mask (docs/benchmarks.md, "GPU checks": the host, not the
device, bounds a step there).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import Tensor


def from_host(values: Sequence, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor of Python numbers on `device`. To a GPU it goes from pinned memory without
    blocking: a blocking copy first waits for every kernel queued before it, and the driver may
    do the same for a non-blocking one from pageable memory."""
    values_on_host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return values_on_host.to(device)
    return values_on_host.pin_memory().to(device, non_blocking=True)


def segment_starts(sizes: Sequence[int]) -> list[int]:
    """Where each segment of a concatenation of segments of these sizes starts."""
    return list(accumulate(sizes[:-1], initial=0)) if sizes else []


def segment_ids(sizes: Sequence[int], device: torch.device) -> Tensor:
    """int64[sum(sizes)]: row r of a concatenation of segments of these sizes -> its segment."""
    counts = from_host(sizes, torch.long, device)
    segments = torch.arange(len(sizes), device=device)
    return torch.repeat_interleave(segments, counts, output_size=sum(sizes))


def grouped_rows(keys: Tensor, num_groups: int) -> tuple[Tensor, list[int]]:
    """The rows of keys int64[N] (each in 0..num_groups-1) ordered by key, rows of one key in
    their original order, and how many rows each key has: (order int64[N], sizes, a list of
    num_groups ints). `tensor[order].split(sizes)` then gives each group's rows. Reading the sizes
    is the one wait for the device, however many rows and groups."""
    order = torch.sort(keys, stable=True).indices
    sizes = torch.zeros(num_groups, dtype=torch.long, device=keys.device)
    sizes.index_add_(0, keys, torch.ones_like(keys))
    return order, sizes.tolist()
