"""`checkpoints/best.ckpt`: the run's state at its best validation, beside `last.ckpt`.

The teacher is the model a semi-supervised run deploys, so it is kept by `teacher/map` (the
student's `student/map` for `method=supervised`, which has no teacher). Lightning's
`ModelCheckpoint` does the bookkeeping and writes through the trainer (the project's atomic
writer); this subclass adds two things:

* validations before the teacher exists (during burn-in) have no `teacher/map`; they are no
  candidates, where `ModelCheckpoint` would stop the run for a missing monitored metric;
* the step and the metrics of the best validation are remembered (and checkpointed, so a
  resumed run still knows them) for `results.json`;
* a run resumed from its own `checkpoints/` keeps its best even when the run folder was moved
  (`ModelCheckpoint` compares absolute folders and would forget it), and a `monitor` that no
  validation can log is a config error at setup, not a run without `best.ckpt`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from labelmatch.callbacks.requirements import ScoredModule, require
from labelmatch.errors import ConfigError
from labelmatch.evaluation.coco_eval import STAT_INDEX

BEST_NAME = "best"


class BestCheckpoint(ModelCheckpoint):
    """Args:
    dirpath: the checkpoint folder; the file is `dirpath/best.ckpt`, overwritten by each new
        best (strictly higher `monitor`; ties keep the earlier step).
    monitor: the logged metric to maximise, e.g. `teacher/map`.
    """

    def __init__(self, dirpath: str | Path, monitor: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=BEST_NAME,
            monitor=monitor,
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            # Overwrite a best.ckpt left by an earlier run in the directory, never best-v1.ckpt.
            enable_version_counter=False,
        )
        self.best_step: int | None = None
        self.best_metrics: dict[str, Any] | None = None
        self._resumed_in_own_folder = False  # set while a checkpoint is being restored

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, ScoredModule, "BestCheckpoint")  # best.ckpt records eval_metrics
        model, _, metric = str(self.monitor).partition("/")
        loggable = model in ("student", "teacher") and (
            metric in STAT_INDEX or (metric.startswith("ap/") and len(metric) > 3)
        )
        if not loggable:  # else no validation would ever write best.ckpt
            raise ConfigError(
                f"callbacks.best_checkpoint.monitor={self.monitor}: no validation logs it; "
                "a model's (student/ or teacher/) map, map_50, map_75, map_small, map_medium, "
                "map_large, mar_100 or ap/<class>"
            )
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Called just before load_state_dict, with the path being restored known.
        path = trainer.ckpt_path
        own = Path(path).resolve().parent == Path(self.dirpath).resolve() if path else False
        self._resumed_in_own_folder = own

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor in trainer.callback_metrics:
            super().on_validation_end(trainer, pl_module)
        self._resave_last_of_this_step(trainer)

    def _resave_last_of_this_step(self, trainer: L.Trainer) -> None:
        """A periodic `last.ckpt` of this step was written when the step's batch ended, before
        this validation: written again, it holds the validation's outcome (this best, the
        module's scores). Otherwise a run resumed from it, which does not validate that step
        again, would compare later validations with the best of before it and could overwrite
        a better best.ckpt with a worse one."""
        for callback in trainer.checkpoint_callbacks:
            if (
                callback is not self
                and isinstance(callback, ModelCheckpoint)
                and callback.save_last
                and callback.last_model_path
                and callback._last_global_step_saved == trainer.global_step
            ):
                trainer.save_checkpoint(callback.last_model_path, callback.save_weights_only)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Called only for a new best: record it first, so that best.ckpt itself holds it.
        self.best_step = trainer.global_step
        self.best_metrics = copy.deepcopy(trainer.lightning_module.eval_metrics)
        super()._save_checkpoint(trainer, filepath)

    def summary(self, run_dir: Path) -> dict[str, Any] | None:
        """What results.json says of the best checkpoint: its file (relative to the run
        directory), step and monitored metric, and the models' metrics at that step;
        None when no validation produced the metric."""
        if self.best_step is None:
            return None
        return {
            "checkpoint": Path(self.best_model_path)
            .resolve()
            .relative_to(run_dir.resolve())
            .as_posix(),
            "step": self.best_step,
            "monitor": self.monitor,
            **self.best_metrics,
        }

    def state_dict(self) -> dict[str, Any]:
        best = {"best_step": self.best_step, "best_metrics": self.best_metrics}
        return {**super().state_dict(), **best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_in = state_dict.get("dirpath", self.dirpath)
        if self._resumed_in_own_folder and saved_in != self.dirpath:  # the run folder moved
            state_dict = {**state_dict, "dirpath": self.dirpath}
            for key in ("best_model_path", "last_model_path", "kth_best_model_path"):
                if state_dict.get(key):
                    state_dict[key] = str(Path(self.dirpath) / Path(state_dict[key]).name)
            state_dict["best_k_models"] = {
                str(Path(self.dirpath) / Path(path).name): score
                for path, score in state_dict.get("best_k_models", {}).items()
            }
        super().load_state_dict(state_dict)
        # As ModelCheckpoint: the best is only carried over when resumed into the same folder.
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            self.best_step = state_dict.get("best_step")
            self.best_metrics = state_dict.get("best_metrics")
