"""Callbacks state what they need of the module and the datamodule, and fail at setup, naming
the callback, the object and every missing member (labelmatch/callbacks/requirements.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.callbacks.best_checkpoint import BestCheckpoint
from labelmatch.callbacks.pseudo_statistics import PseudoLabelStatistics
from labelmatch.callbacks.requirements import (
    EvaluatedModule,
    PseudoLabellingModule,
    ScoredModule,
    ThresholdedModule,
    missing_members,
    require,
)
from labelmatch.callbacks.run_health import RunHealth
from labelmatch.callbacks.run_plots import RunPlots
from labelmatch.method.module import LabelMatchModule
from labelmatch.models.faster_rcnn import build_frcnn_tiny
from tests.test_pseudo_statistics import module_double

DATAMODULE = SimpleNamespace(
    labeled_dataset=None,
    labeled_class_prior=None,
    unlabeled_dataset=None,
    reference_dataloader=lambda num_images, seed, labeled=False: [],
)


def test_act_refresh_given_a_module_without_set_thresholds_fails_at_setup() -> None:
    module = module_double()
    del module.set_thresholds
    trainer = SimpleNamespace(datamodule=DATAMODULE)
    with pytest.raises(
        TypeError,
        match=r"^ACTRefresh needs ThresholdedModule: the SimpleNamespace it was given lacks "
        r"set_thresholds$",
    ):
        ACTRefresh().setup(trainer, module, "fit")


def test_every_missing_member_is_named_nested_ones_with_their_path() -> None:
    module = SimpleNamespace(hparams=SimpleNamespace(), teacher=None)
    assert missing_members(module, PseudoLabellingModule) == [
        "burn_in_steps",
        "global_step",
        "hparams.class_names",
        "in_semi_supervised_phase",
        "log_event",
        "teacher_ready",
    ]
    with pytest.raises(TypeError, match="lacks reference_dataloader, unlabeled_dataset"):
        ACTRefresh().setup(
            SimpleNamespace(
                datamodule=SimpleNamespace(labeled_dataset=None, labeled_class_prior=None)
            ),
            module_double(),
            "fit",
        )


@pytest.mark.parametrize(
    ("callback", "name"),
    [
        (PseudoLabelStatistics(), "PseudoLabelStatistics"),
        (RunHealth(window=4), "RunHealth"),
        (RunPlots(), "RunPlots"),
        (BestCheckpoint("unused", monitor="teacher/map"), "BestCheckpoint"),
    ],
)
def test_each_callback_checks_its_module_at_setup(callback, name) -> None:
    trainer = SimpleNamespace(datamodule=DATAMODULE)
    with pytest.raises(TypeError, match=f"^{name} needs .*Module: the object it was given"):
        callback.setup(trainer, object(), "fit")


@pytest.mark.parametrize("method", ["supervised", "labelmatch"])
def test_the_module_satisfies_every_module_protocol(method) -> None:
    module = LabelMatchModule(
        build_frcnn_tiny(3),
        method={"name": method, "burn_in_steps": 5},
        optim={},
        class_names=["a", "b", "c"],
        category_ids=[1, 2, 3],
        val_json="unused.json",
    )
    for protocol in (ThresholdedModule, PseudoLabellingModule, EvaluatedModule, ScoredModule):
        assert missing_members(module, protocol) == []
        assert isinstance(module, protocol)
        require(module, protocol, "test")
    assert isinstance(module.threshold_version, torch.Tensor)
