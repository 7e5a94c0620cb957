"""Training entry point: `python -m labelmatch.run [group=option ...] [key=value ...]`.

Data is resolved and validated first (bad input fails before any model is built), then the
detector, the LightningModule, the callbacks and the Trainer are built from the Hydra config.
The run directory (Hydra's) receives `results.json`, `metrics.csv`, `eval/<model>.json`,
`checkpoints/last.ckpt` and `checkpoints/best.ckpt`, `plots/` and the resolved config in
`.hydra/`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from labelmatch.callbacks.best_checkpoint import BestCheckpoint
from labelmatch.callbacks.run_health import RunHealth
from labelmatch.checkpoints import AtomicCheckpointIO, check_checkpoint_classes
from labelmatch.cli import cli_errors
from labelmatch.errors import ConfigError
from labelmatch.instantiate import instantiate_datamodule
from labelmatch.loggers import finish_wandb_run
from labelmatch.method.module import LabelMatchModule
from labelmatch.results import collect_results, summary_line
from labelmatch.scaling import scale_to_batch

log = logging.getLogger("labelmatch")


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """The `callbacks` group's entries (conf/callbacks/<method>.yaml), in their order, which is
    the order Lightning calls their hooks in (checkpoint callbacks last, in their order). An
    entry is left out when null or when its `_enabled_` is false (the progress bar with
    +trainer.enable_progress_bar=false, ACT with method.act.enabled=false); an entry with a
    `dirpath` writes into the run's checkpoints/."""
    callbacks: list[L.Callback] = []
    for entry in OmegaConf.to_container(cfg.callbacks, resolve=True).values():
        if entry is None or not entry.pop("_enabled_", True):
            continue
        if "dirpath" in entry:
            entry["dirpath"] = run_dir / "checkpoints"
        callbacks.append(instantiate(entry))
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The `logger` group's entries (conf/logger/): metrics.csv always, wandb or TensorBoard
    beside it, each saving into the run directory; those beside it also get the whole config."""
    loggers: list[Logger] = []
    for entry in cfg.logger.values():
        if entry is not None:
            loggers.append(instantiate(entry, save_dir=str(run_dir)))
    for logger in loggers:
        if not isinstance(logger, CSVLogger):  # Lightning gives metrics.csv the module's hparams
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate one configuration; returns what is written to results.json."""
    check_experiment_package(cfg)
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resume_checkpoint(cfg.ckpt_path, run_dir)
    datamodule = instantiate_datamodule(cfg.data, use_unlabeled=cfg.method.name != "supervised")
    datamodule.prepare_data()
    datamodule.setup("fit")
    if fill_derived_view_sizes(cfg, datamodule):
        save_run_config(cfg, run_dir)

    check_checkpoints_match_data(cfg, ckpt_path, datamodule)
    check_teacher_start(cfg)
    check_one_batch_per_step(cfg)
    check_accelerator(cfg)

    detector = instantiate(cfg.model, num_classes=datamodule.num_classes)
    # The unlabeled criterion of semi-supervised methods (conf/method/labelmatch.yaml).
    criterion = instantiate(cfg.method.criterion) if cfg.method.get("criterion") else None
    module = LabelMatchModule(
        detector,
        method=OmegaConf.to_container(cfg.method, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        class_names=list(datamodule.class_names),
        category_ids=list(datamodule.category_map.category_ids),
        val_json=str(datamodule.splits.val_json),
        model_config=OmegaConf.to_container(cfg.model, resolve=True),
        criterion=criterion,
    )
    if ckpt_path:
        keep_earlier_metrics(run_dir)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir),
        callbacks=build_callbacks(cfg, run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if module.last_eval_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)

    results = collect_results(cfg, module, datamodule, trainer.global_step)
    for callback in trainer.callbacks:
        if isinstance(callback, RunHealth):
            results["health"] = dict(callback.counts)
    best_checkpoint = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint)), None)
    best = best_checkpoint.summary(run_dir) if best_checkpoint is not None else None
    if best is not None:  # no validation scored, or ~callbacks.best_checkpoint
        results["best"] = best
    if trainer.is_global_zero:
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        log.info(summary_line(results))
    return results


@rank_zero_only
def keep_earlier_metrics(run_dir: Path) -> None:
    """Lightning's CSVLogger starts `metrics.csv` afresh in a directory that has one: a run
    resumed in its own directory first moves the earlier file to `metrics.<n>.csv`."""
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        number = 1 + sum(1 for _ in run_dir.glob("metrics.*.csv"))
        metrics.rename(run_dir / f"metrics.{number}.csv")


def resume_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint `ckpt_path` names: a path, None (a fresh start), or "auto": the run
    directory's own `checkpoints/last.ckpt` when there is one, else a fresh start. With "auto"
    a job that is started again in its directory (a SLURM job requeued after pre-emption or
    its time limit) continues from its latest save instead of from step 0."""
    if ckpt_path != "auto":
        return ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("ckpt_path=auto: resuming from %s", last)
        return str(last)
    log.info("ckpt_path=auto: no %s yet, starting from step 0", last)
    return None


def check_checkpoints_match_data(cfg: DictConfig, ckpt_path: str | None, datamodule) -> None:
    """Checkpoints trained on other classes fail here, naming the file, before any model."""
    names, ids = list(datamodule.class_names), list(datamodule.category_map.category_ids)
    if ckpt_path:
        check_checkpoint_classes(ckpt_path, "ckpt_path", names, ids)
    if cfg.method.get("init_from") and cfg.method.name != "supervised":
        check_checkpoint_classes(cfg.method.init_from, "method.init_from", names, ids)


def check_experiment_package(cfg: DictConfig) -> None:
    """ConfigError for an `experiment=` overlay without its `# @package _global_` header: Hydra
    then nests its keys under `experiment.` (experiment.method.alpha) where nothing reads them,
    and the run trained the recipe without them, silently."""
    nested = cfg.get("experiment")
    if nested is not None:
        keys = ", ".join(f"experiment.{key}" for key in nested) or "experiment"
        raise ConfigError(
            f"the config has {keys}, which nothing reads: an experiment overlay "
            "(conf/experiment/<name>.yaml) must begin with the line '# @package _global_' so "
            "that its keys replace the recipe's (see conf/experiment/digits.yaml)"
        )


def check_teacher_start(cfg: DictConfig) -> None:
    """A semi-supervised run needs a trained detector for its first pseudo labels: a supervised
    baseline (method.init_from, the official two-stage recipe of docs/method.md §1) or an
    in-run burn-in (method.burn_in_steps > 0). The paper's experiments have neither set."""
    method = cfg.method
    if method.name != "supervised" and not method.get("init_from") and not method.burn_in_steps:
        raise ConfigError(
            "method.init_from is not set and method.burn_in_steps is 0: the teacher would label "
            "with an untrained detector. Give method.init_from=CKPT, the checkpoints/last.ckpt "
            "of the supervised baseline (experiment=<name>_baseline; README: The paper's "
            "experiments), or method.burn_in_steps=N for a burn-in inside the run"
        )


def check_one_batch_per_step(cfg: DictConfig) -> None:
    """Gradient accumulation is refused: the callbacks act once per optimiser step (ACT's
    refresh and online update, run health, the statistics' windows), and with several batches
    per step their hooks would run once per batch at the same `global_step` (a refresh K times
    over). A larger batch is `data.labeled_batch_size` / `unlabeled_batch_size`, or more
    processes (`optim.scale_to_batch`)."""
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
    if accumulate != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} is not supported: ACT, run health and "
            "the pseudo-label statistics act once per optimiser step; use a larger "
            "data.labeled_batch_size / data.unlabeled_batch_size or more devices instead"
        )


def check_accelerator(cfg: DictConfig) -> None:
    """ConfigError for `trainer.accelerator=gpu` (or cuda) on a machine without a visible GPU,
    before a model is built: the paper's recipes ask for 8 GPUs, and Lightning's own message
    ("No supported gpu backend found!") says nothing of what to pass instead."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer.devices={cfg.trainer.get('devices')}) "
            "but no GPU is visible here; pass trainer.accelerator=cpu trainer.devices=1 to run "
            "on this machine's CPU (the paper's recipes assume 8 GPUs, see optim.scale_to_batch)"
        )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    succeeded = False
    try:
        with cli_errors(log):
            if apply_batch_scaling(cfg):
                save_run_config(cfg, run_dir)
            results = train(cfg, run_dir)
            succeeded = True
    finally:
        finish_wandb_run(succeeded)  # each job of a multirun is its own wandb run
    final = results.get("teacher", results.get("student", {}))
    return float(final.get("map", 0.0))


def apply_batch_scaling(cfg: DictConfig) -> bool:
    """`optim.scale_to_batch=true`: rescale the recipe and log what changed; True if it did."""
    changes = scale_to_batch(cfg)
    if changes:
        log.info("optim.scale_to_batch: %s", "; ".join(changes))
    return bool(changes)


def fill_derived_view_sizes(cfg: DictConfig, datamodule) -> bool:
    """Data scale keys left null (derived from the images by the datamodule) get the values
    the datamodule chose, so that the saved config says what ran (and `predict` / `export` find
    the test size there). True if any was filled."""
    filled = False
    for key, value in getattr(datamodule, "view_sizes", {}).items():
        if key in cfg.data and cfg.data[key] is None and isinstance(value, (int, list, tuple)):
            OmegaConf.update(cfg, f"data.{key}", list(value) if isinstance(value, tuple) else value)
            filled = True
    return filled


@rank_zero_only
def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """The config as it runs (scaled, sizes derived) over Hydra's `.hydra/config.yaml`."""
    if (run_dir / ".hydra").is_dir():
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


if __name__ == "__main__":
    main()
