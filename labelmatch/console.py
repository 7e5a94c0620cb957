"""What the console shows. Warnings and log lines of the dependencies that a user of this project
cannot act on are filtered here, each by its exact message and with the reason it is harmless;
anything else still shows."""

from __future__ import annotations

import logging
import warnings

# (message regex, why it says nothing actionable here)
IGNORED_WARNINGS = (
    # The EMA teacher sits in eval mode on purpose: it labels with test-time settings.
    (r"Found \d+ module\(s\) in eval mode", UserWarning),
    # Lightning's CSVLogger writes metrics.csv into the run directory, which already holds
    # Hydra's .hydra/; a resumed run's earlier metrics.csv is kept as metrics.<n>.csv first
    # (labelmatch.run.keep_earlier_metrics), so nothing is lost.
    (r"Experiment logs directory .* exists and is not empty", UserWarning),
    # Resuming in the run directory: checkpoints/ already holds last.ckpt (and best.ckpt), which
    # is why the run is resumed from there; nothing is overwritten but what a resume updates.
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
    # Lightning 2.6's own pytree helper on torch >= 2.10: a deprecation inside Lightning.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
)

# Info lines of Lightning's that advertise rather than inform.
IGNORED_LOG_PREFIXES = ("💡 Tip:",)
LIGHTNING_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(IGNORED_LOG_PREFIXES)


def quiet_dependencies() -> None:
    """Install the filters (idempotent); the entry points call it before building anything."""
    for message, category in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisements) for f in logger.filters):
            logger.addFilter(_DropAdvertisements())
