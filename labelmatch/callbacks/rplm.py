"""RPLM, reliable pseudo-label mining (docs/method.md §4), as a callback-owned policy.

The callback hands itself to the module as its mining policy; without the callback, no uncertain
box is ever promoted. The decision is taken afresh at every step (nothing remembered per box).
"""

from __future__ import annotations

import lightning as L
from torch import Tensor

from labelmatch.method.mining import mine_reliable


class ReliablePseudoLabelMining(L.Callback):
    def __init__(self, score: float = 0.8, iou: float = 0.8) -> None:
        self.score = score
        self.iou = iou

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.mining = self

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.mining = None

    def __call__(
        self,
        uncertain_boxes: Tensor,
        uncertain_labels: Tensor,
        proposal_box_index: Tensor,
        refined_boxes: Tensor,
        class_scores: Tensor,
    ) -> Tensor:
        """Which uncertain boxes [U] become reliable (see `mine_reliable`)."""
        return mine_reliable(
            uncertain_boxes,
            uncertain_labels,
            proposal_box_index,
            refined_boxes,
            class_scores,
            score_threshold=self.score,
            iou_threshold=self.iou,
        )
