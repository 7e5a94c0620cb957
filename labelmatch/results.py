"""What a run or a re-evaluation reports: the `results.json` fields and the closing log line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from labelmatch.method.module import LabelMatchModule


def collect_results(cfg: DictConfig, module: LabelMatchModule, datamodule, steps: int) -> dict:
    results: dict[str, Any] = {
        "method": cfg.method.name,
        "steps": steps,
        "seed": cfg.seed,
        "val_json": str(datamodule.splits.val_json),
    }
    results.update(module.eval_metrics)
    if module.burn_in_metrics is not None:
        results["burn_in"] = module.burn_in_metrics
    if module.semi_supervised:
        names = module.hparams.class_names
        results["act"] = {
            "reliable": dict(zip(names, module.reliable_thresholds.tolist())),
            "uncertain": dict(zip(names, module.uncertain_thresholds.tolist())),
        }
        # What ACT's last refresh aimed at (with prior=estimated, its estimate).
        prior = module.threshold_prior
        if prior is not None:
            results["act"]["prior"] = {
                "class_ratios": dict(zip(names, prior.class_ratios.tolist())),
                "boxes_per_image": prior.boxes_per_image,
            }
    return results


def summary_line(results: dict[str, Any]) -> str:
    parts = []
    if "burn_in" in results:
        parts.append(f"burn-in mAP {100 * results['burn_in']['map']:.1f}")
    for name in ("student", "teacher"):
        if name in results:
            m = results[name]
            parts.append(f"{name} mAP {100 * m['map']:.1f} (AP50 {100 * m['map_50']:.1f})")
    return f"{results['method']} after {results['steps']} steps: " + " | ".join(parts)
