"""What the callbacks need of the module and of the datamodule, stated as typed protocols.

A callback calls `require(obj, Protocol, who)` in its `setup`: a module or datamodule that lacks
a member fails there, with one message naming the callback, the object and every missing member,
instead of an AttributeError deep inside a training step. `LabelMatchModule` and
`DetectionDataModule` satisfy all of them; a test double needs only what its callback reads.

A member annotated with another protocol (`hparams: HasClassNames`) is checked inside too, and
reported with its path (`hparams.class_names`).
"""

from __future__ import annotations

from typing import Any, Protocol, get_type_hints, runtime_checkable

from torch import Tensor

from labelmatch.data.class_prior import ClassPrior


@runtime_checkable
class HasClassNames(Protocol):
    class_names: list[str]


@runtime_checkable
class EventLoggingModule(Protocol):
    """A module whose values at events (burn-in end, ACT refresh) are logged once, at a step."""

    hparams: HasClassNames
    global_step: int

    def log_event(self, metrics: dict[str, float], step: int | None = None) -> None: ...


@runtime_checkable
class PseudoLabellingModule(EventLoggingModule, Protocol):
    """A mean-teacher module: a teacher that labels from the end of burn-in on."""

    teacher: Any
    teacher_ready: Tensor
    burn_in_steps: int
    in_semi_supervised_phase: bool


@runtime_checkable
class ThresholdedModule(PseudoLabellingModule, Protocol):
    """A module whose per-class thresholds [C] a callback sets (ACT, docs/method.md §2)."""

    reliable_thresholds: Tensor
    uncertain_thresholds: Tensor
    threshold_version: Tensor
    threshold_refreshes: Tensor
    threshold_prior: ClassPrior | None  # what the latest refresh aimed at

    def set_thresholds(
        self, reliable: Tensor, uncertain: Tensor, prior: ClassPrior | None = None
    ) -> None: ...


@runtime_checkable
class ScoredModule(Protocol):
    """A module that keeps its latest validation metrics per model ("student", "teacher")."""

    eval_metrics: dict[str, dict[str, Any]]


@runtime_checkable
class EvaluatedModule(ScoredModule, Protocol):
    """A scored module that also keeps the burn-in model's metrics (None before the switch)."""

    burn_in_metrics: dict[str, Any] | None


@runtime_checkable
class LabeledDataModule(Protocol):
    """A datamodule with a labeled set and its class prior, computed once
    (`DetectionDataModule.labeled_class_prior`, docs/method.md §2)."""

    labeled_dataset: Any
    labeled_class_prior: Any


@runtime_checkable
class UnlabeledDataModule(LabeledDataModule, Protocol):
    """A datamodule with an unlabeled set and the reference loaders of an ACT refresh pass."""

    unlabeled_dataset: Any

    def reference_dataloader(self, num_images: int, step: int, labeled: bool = False) -> Any: ...


@runtime_checkable
class CalibratingDataModule(UnlabeledDataModule, Protocol):
    """A datamodule that also says where the estimated prior calibrates the teacher: on which
    images, with which known prior (`DetectionDataModule.calibration_images`, docs/method.md §2
    "Estimated prior")."""

    calibration_images: Any
    calibration_class_prior: Any

    def calibration_dataloader(self, num_images: int, step: int) -> Any: ...


def missing_members(obj: Any, protocol: type, prefix: str = "") -> list[str]:
    """The members of `protocol` (annotated attributes and methods, its bases' included) that
    `obj` lacks, as dotted paths."""
    hints = get_type_hints(protocol)
    methods = {
        name
        for base in protocol.__mro__
        if getattr(base, "_is_protocol", False) and base is not Protocol
        for name, value in vars(base).items()
        if callable(value) and not name.startswith("_")
    }
    missing = []
    for name in sorted(set(hints) | methods):
        if not hasattr(obj, name):
            missing.append(prefix + name)
            continue
        hint = hints.get(name)
        if isinstance(hint, type) and getattr(hint, "_is_protocol", False):
            missing.extend(missing_members(getattr(obj, name), hint, f"{prefix}{name}."))
    return missing


def require(obj: Any, protocol: type, who: str) -> None:
    """TypeError unless `obj` has every member of `protocol`; `who` names the callback."""
    missing = missing_members(obj, protocol)
    if missing:
        raise TypeError(
            f"{who} needs {protocol.__name__}: the {type(obj).__name__} it was given lacks "
            f"{', '.join(missing)}"
        )
