"""Keeps the run directory's `plots/` current, and gives wandb the per-class AP table.

After each validation and each threshold update (never per step) the CSV logger is flushed and
`labelmatch.plots.write_plots` redraws the figures from `metrics.csv`: the same functions the
analysis notebook calls on a finished run. Rank zero only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from labelmatch.callbacks.pseudo_statistics import threshold_updates
from labelmatch.callbacks.requirements import (
    EvaluatedModule,
    LabeledDataModule,
    PseudoLabellingModule,
    require,
)
from labelmatch.loggers import log_table
from labelmatch.plots import write_plots

log = logging.getLogger(__name__)


class RunPlots(L.Callback):
    def __init__(self) -> None:
        self.updates_seen = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, PseudoLabellingModule, "RunPlots")
        require(pl_module, EvaluatedModule, "RunPlots")
        require(trainer.datamodule, LabeledDataModule, "RunPlots")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        updates = threshold_updates(outputs, self.updates_seen)
        if updates != self.updates_seen:
            self.updates_seen = updates
            self.redraw(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.log_per_class_ap(trainer, pl_module)
        self.redraw(trainer, pl_module)

    def redraw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # metrics.csv is otherwise written every 100 steps
        written = write_plots(Path(trainer.default_root_dir), pl_module.hparams.class_names)
        log.debug("plots at step %d: %s", trainer.global_step, [p.name for p in written])

    def log_per_class_ap(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Tab. 4 as a table: class, its labeled box count, student and teacher AP."""
        metrics = pl_module.eval_metrics
        if not trainer.is_global_zero or not metrics:
            return
        names = pl_module.hparams.class_names
        labeled = trainer.datamodule.labeled_dataset.class_counts
        models = [m for m in ("student", "teacher") if m in metrics]
        rows = [
            [name, count, *(metrics[m]["per_class"][name] for m in models)]
            for name, count in sorted(zip(names, labeled), key=lambda row: -row[1])
        ]
        columns = ["class", "labeled boxes", *(f"{m} AP" for m in models)]
        log_table(trainer.loggers, "teacher/per_class_ap", columns, rows)

    def state_dict(self) -> dict[str, int]:
        return {"updates_seen": self.updates_seen}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.updates_seen = int(state_dict["updates_seen"])
