"""The DDP rank check's digest of the module's state (labelmatch/callbacks/rank_agreement.py)."""

from __future__ import annotations

from labelmatch.callbacks.rank_agreement import method_state, state_digest
from labelmatch.method.module import LabelMatchModule
from labelmatch.models.faster_rcnn import build_frcnn_tiny


def test_the_rank_agreement_digest_reads_the_modules_scalar_buffers() -> None:
    """The module's state holds 0-dim buffers (`teacher_ready`, the int64 `threshold_version`):
    the DDP rank check hashes them too, and a changed version changes the digest."""
    module = LabelMatchModule(
        build_frcnn_tiny(3),
        method={"name": "labelmatch", "burn_in_steps": 5},
        optim={},
        class_names=["a", "b", "c"],
        category_ids=[1, 2, 3],
        val_json="unused.json",
    )
    before = state_digest(method_state(module))
    module.set_thresholds(module.reliable_thresholds.clone(), module.uncertain_thresholds.clone())
    assert state_digest(method_state(module)) != before
