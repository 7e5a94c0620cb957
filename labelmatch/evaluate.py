"""Re-evaluate a checkpoint: `python -m labelmatch.evaluate checkpoint=CKPT [data overrides]`.

Scores the checkpoint's student and (trained) teacher on a val split with the training's own
validation code (Lightning's validate loop, `LabelMatchModule.score`), and writes to Hydra's run
directory the same `results.json` fields as training (plus `checkpoint`) and `eval/<model>.json`.
The data is the training run's (`evaluation_data`): its `.hydra/config.yaml`, with
`+data.KEY=VALUE` on top, or a data group the command line names (`data=coco
data.splits.val_json=...`) as `python -m labelmatch.run` composes it; its categories must be the
checkpoint's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from labelmatch.checkpoints import (
    check_checkpoint_classes,
    load_module,
    training_config,
    training_reading,
)
from labelmatch.cli import cli_errors
from labelmatch.data.errors import DataError
from labelmatch.instantiate import instantiate_datamodule
from labelmatch.results import collect_results, summary_line

log = logging.getLogger("labelmatch")


def evaluation_data(cfg: DictConfig, trained: DictConfig | None) -> DictConfig:
    """The data config to score on. `data=NAME ...` on the command line: that group, composed as
    training composes it. Otherwise the training run's data (its `.hydra/config.yaml`, view sizes
    derived from its images included), with the command line's `+data.KEY=VALUE` merged on top;
    a DataError when the checkpoint's run directory is gone (`trained`, its config, is None),
    saying what to pass."""
    given = cfg.get("data")
    if given is not None and "_target_" in given:
        return given
    if trained is None:
        raise DataError(
            f"checkpoint={cfg.checkpoint}: its run directory has no .hydra/config.yaml to take "
            "the data from; pass the data config the run trained with, e.g. data=coco "
            "data.splits.image_dir=... data.splits.labeled_json=... data.splits.val_json=..."
        )
    if given:  # merged into the whole run config, so its ${seed}, ${paths...} still resolve
        trained = OmegaConf.merge(trained, {"data": given})
    return trained.data


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    module, checkpoint = load_module(cfg.checkpoint)
    trained = training_config(cfg.checkpoint)
    datamodule = instantiate_datamodule(evaluation_data(cfg, trained), use_unlabeled=False)
    datamodule.prepare_data()
    datamodule.setup("validate")
    names, ids = list(datamodule.class_names), list(datamodule.category_map.category_ids)
    check_checkpoint_classes(cfg.checkpoint, "checkpoint", names, ids)
    module.hparams.val_json = str(datamodule.splits.val_json)
    # a data group on the command line takes `data.KEY=`; the run's data takes `+data.KEY=`
    override = "data." if "_target_" in (cfg.get("data") or {}) else "+data."
    warn_if_another_test_size(datamodule, training_reading(checkpoint, trained), override)
    module.burn_in_metrics = None  # measured in training, on its val split: not re-evaluated
    trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=False, callbacks=[])
    trainer.validate(module, datamodule=datamodule, verbose=False)

    run = OmegaConf.create(
        {"method": {"name": module.method["name"]}, "seed": trained.seed if trained else None}
    )
    results = collect_results(run, module, datamodule, checkpoint["global_step"])
    results["checkpoint"] = str(Path(cfg.checkpoint).resolve())
    if trainer.is_global_zero:  # several devices: one writer, as training
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        log.info(summary_line(results))
    return results


def warn_if_another_test_size(datamodule, trained: dict[str, Any], override: str = "data.") -> None:
    """A warning when the val images are resized otherwise than the training run validated
    (`trained`: `labelmatch.checkpoints.training_reading`): a data group of the command line, or
    a size given there, scores another resolution, hence another mAP. `override`: how the
    command line sets a data key ("data." with a data group, "+data." on the run's data)."""
    used = {key: datamodule.view_sizes[key] for key in ("test_scale", "max_size")}
    saved = {key: trained.get(key) for key in used}
    if any(saved[key] is not None and saved[key] != used[key] for key in used):
        log.warning(
            "evaluating at test_scale=%s max_size=%s, the training run validated at "
            "test_scale=%s max_size=%s: pass %stest_scale=%s %smax_size=%s to score as it did",
            used["test_scale"], used["max_size"], saved["test_scale"], saved["max_size"],
            override, saved["test_scale"], override, saved["max_size"],
        )  # fmt: skip


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with cli_errors(log):
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
