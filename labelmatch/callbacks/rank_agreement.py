"""Under DDP, check that every rank holds the same method state.

DDP keeps the students equal (same initial weights, all-reduced gradients); the teacher (an EMA
of the student) and the ACT thresholds (computed from all ranks' gathered teacher scores) must
then be equal too. A divergence would silently make ranks label differently, so after every
validation and at the end of training each rank hashes its teacher, student and thresholds,
logs the digest, and the ranks compare them; a mismatch stops the run.
"""

from __future__ import annotations

import hashlib
import logging

import lightning as L
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def state_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the named tensors' exact bytes, in name order (hex string)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        # Flattened first: a 0-dim tensor (e.g. the int64 `threshold_version`) has no byte view.
        data = tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()


def method_state(pl_module: L.LightningModule) -> dict[str, Tensor]:
    """The state every rank must agree on: all weights and buffers (student, teacher,
    thresholds, phase flag)."""
    return dict(pl_module.state_dict())


class RankAgreement(L.Callback):
    """Raises RuntimeError when the ranks' method states differ (no-op on one process)."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, "validation")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, "end of training")

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        if trainer.world_size == 1:
            return
        digest = state_digest(method_state(pl_module))
        log.info(
            "rank %d state digest at step %d: %s", trainer.global_rank, trainer.global_step, digest
        )
        # int32: every backend (gloo, NCCL) all-gathers it.
        local = torch.tensor(
            list(bytes.fromhex(digest)), dtype=torch.int32, device=pl_module.device
        )
        every_rank = trainer.strategy.all_gather(local).reshape(trainer.world_size, -1)
        if not bool((every_rank == every_rank[0]).all()):
            digests = [bytes(row.tolist()).hex()[:12] for row in every_rank.cpu()]
            raise RuntimeError(
                f"ranks disagree on the model state at step {trainer.global_step} ({when}): "
                f"digests {digests}"
            )
