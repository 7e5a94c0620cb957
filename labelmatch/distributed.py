"""What several processes (DDP ranks) share: who this process is and the gathers that give
every rank the same data. One process without torch.distributed is rank 0 of 1 and gathers
nothing."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L


def distributed_rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_predictions(predictions: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Every rank's share of the val predictions (each rank scores a disjoint share of images),
    so that all ranks compute the same COCO metrics."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return predictions
    shares = gather_saved(predictions)  # tensors travel as torch.save bytes
    return sorted((p for share in shares for p in share), key=lambda p: p["image_id"])


def gather_rows(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """Every rank's rows [B_r, ...] concatenated in rank order (row counts may differ), on the
    CPU; the strategy's all_gather of the counts, then of the rows padded to the longest."""
    if trainer.world_size == 1:
        return rows.cpu()
    strategy = trainer.strategy
    device = strategy.root_device
    count = torch.tensor([len(rows)], device=device)
    counts = strategy.all_gather(count).flatten().tolist()
    padded = rows.new_zeros(max(counts), *rows.shape[1:]).to(device)
    padded[: len(rows)] = rows.to(device)
    gathered = strategy.all_gather(padded)  # [world, max(counts), ...]
    return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)]).cpu()


def gather_saved(value: Any) -> list[Any]:
    """Every rank's `value` (what torch.save writes and weights_only loads: tensors, numbers,
    lists, dicts), in rank order; [value] in one process. Gathered as torch.save bytes:
    all_gather_object cannot carry CPU tensors reliably."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    buffer = io.BytesIO()
    torch.save(value, buffer)
    every_rank: list[bytes | None] = [None] * dist.get_world_size()
    dist.all_gather_object(every_rank, buffer.getvalue())
    return [torch.load(io.BytesIO(data), weights_only=True) for data in every_rank]
