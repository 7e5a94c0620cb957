"""The error a training step raises when the run has diverged; `SaveOnInterrupt` saves the
diverged state for inspection and the entry points report it as one line (`labelmatch.cli`)."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (on at least one rank)."""

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step = step
        shown = ", ".join(f"{name}={value:.4g}" for name, value in terms.items())
        super().__init__(
            f"non-finite loss at step {step} ({shown}); lower optim.lr or set "
            "trainer.gradient_clip_val"
        )
