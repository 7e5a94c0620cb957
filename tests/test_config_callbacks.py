"""The callbacks and loggers built from conf/callbacks/ and conf/logger/: per method the list
(types and order) the run had before they moved to config, and every experiment x method builds
its datamodule and callbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.callbacks.best_checkpoint import BestCheckpoint
from labelmatch.callbacks.channels_last import ChannelsLast
from labelmatch.callbacks.interrupt import SaveOnInterrupt
from labelmatch.callbacks.pseudo_statistics import PseudoLabelStatistics
from labelmatch.callbacks.random_states import RandomStates
from labelmatch.callbacks.rank_agreement import RankAgreement
from labelmatch.callbacks.run_health import RunHealth
from labelmatch.callbacks.run_plots import RunPlots
from labelmatch.instantiate import instantiate_datamodule
from labelmatch.progress import PhaseProgressBar
from labelmatch.run import build_callbacks, build_loggers
from tests.conftest import CONF_DIR, compose_config

EVERY_METHOD = [PhaseProgressBar, ModelCheckpoint, BestCheckpoint, LearningRateMonitor,
                SaveOnInterrupt, RandomStates, RankAgreement, ChannelsLast]  # fmt: skip
MEASURED = [PseudoLabelStatistics, RunHealth, RunPlots]


def types(overrides: list[str], tmp_path) -> list[type]:
    return [type(c) for c in build_callbacks(compose_config(overrides), tmp_path)]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], [*EVERY_METHOD, ACTRefresh, *MEASURED]),
        (["method.act.enabled=false"], [*EVERY_METHOD, *MEASURED]),
        # RPLM is an option of the criterion (method.rplm.enabled), not a callback.
        (["method.rplm.enabled=false"], [*EVERY_METHOD, ACTRefresh, *MEASURED]),
        (["method=mean_teacher"], [*EVERY_METHOD, *MEASURED]),
        (["method=supervised"], [*EVERY_METHOD, RunPlots]),
        (["+trainer.enable_progress_bar=false"], [*EVERY_METHOD[1:], ACTRefresh, *MEASURED]),
        (["~callbacks.run_plots", "method=mean_teacher"], [*EVERY_METHOD, *MEASURED[:2]]),
    ],
)  # fmt: skip
def test_each_method_gets_the_callbacks_it_had_in_the_same_order(overrides, expected, tmp_path):
    assert types(overrides, tmp_path) == expected


def test_callback_arguments_are_the_method_keys_users_type(tmp_path):
    prior = "{class_ratios: [0.5, 0.5], boxes_per_image: 2.0}"
    cfg = compose_config(
        ["method.act.interval=7", "method.alpha=0.3", f"method.act.prior={prior}",
         "method.act.estimator.tolerance=0.01", "method.act.estimator.min_score=0.5",
         "callbacks.act_refresh.subset=500",
         "checkpoint_every_n_steps=9", "channels_last=false"]
    )  # fmt: skip
    callbacks = {type(c): c for c in build_callbacks(cfg, tmp_path)}
    act = callbacks[ACTRefresh]
    assert (act.interval, act.subset, act.alpha, act.estimator_tolerance) == (7, 500, 0.3, 0.01)
    assert act.estimator_min_score == 0.5  # the default is 0.3: the key reaches the callback
    expected_prior = {"class_ratios": [0.5, 0.5], "boxes_per_image": 2.0}
    assert type(act.prior_setting) is dict and act.prior_setting == expected_prior
    assert callbacks[PseudoLabelStatistics].manual_prior == expected_prior
    assert (callbacks[RunHealth].window, callbacks[RunHealth].manual_prior) == (7, expected_prior)
    assert callbacks[ChannelsLast].mode is False
    last = callbacks[ModelCheckpoint]
    assert (last.dirpath, last._every_n_train_steps) == (str(tmp_path / "checkpoints"), 9)
    assert callbacks[SaveOnInterrupt].dirpath == tmp_path / "checkpoints"
    assert callbacks[BestCheckpoint].monitor == "teacher/map"
    supervised = build_callbacks(compose_config(["method=supervised"]), tmp_path)
    assert next(c for c in supervised if isinstance(c, BestCheckpoint)).monitor == "student/map"


def test_a_misspelt_callback_key_is_a_clear_hydra_error():
    with pytest.raises(Exception, match="Could not override 'callbacks.act_refresh.subsets'"):
        compose_config(["callbacks.act_refresh.subsets=5"])


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_method_builds_its_datamodule_and_callbacks(experiment, tmp_path):
    """Composed and built without generating or reading data (the embedded datasets generate in
    prepare_data; the paper's read their root in it)."""
    for method in ("labelmatch", "mean_teacher", "supervised"):
        overrides = [f"experiment={experiment}", f"method={method}", "data.num_workers=0"]
        cfg = compose_config(overrides)
        if OmegaConf.is_missing(cfg.data.splits, "root"):
            cfg = compose_config([*overrides, f"data.splits.root={tmp_path / 'none'}"])
        datamodule = instantiate_datamodule(cfg.data)
        assert datamodule.view_sizes["test_scale"] == cfg.data.test_scale
        callbacks = [type(c) for c in build_callbacks(cfg, tmp_path)]
        assert callbacks[: len(EVERY_METHOD)] == EVERY_METHOD and callbacks[-1] is RunPlots
        assert (ACTRefresh in callbacks) == (method == "labelmatch")
        assert (PseudoLabelStatistics in callbacks) == (method != "supervised")


def test_loggers_are_the_logger_groups_entries_csv_always(tmp_path):
    assert [type(x) for x in build_loggers(compose_config(), tmp_path)] == [CSVLogger]
    loggers = build_loggers(compose_config(["logger=tensorboard"]), tmp_path)
    assert [type(x) for x in loggers] == [CSVLogger, TensorBoardLogger]
    assert Path(loggers[0].log_dir) == Path(loggers[1].save_dir) == tmp_path
    wandb = compose_config(["logger=wandb", "logger.wandb.project=ssod"]).logger
    assert list(wandb) == ["csv", "wandb"] and wandb.wandb.project == "ssod"


def test_channels_last_takes_true_false_or_auto_and_names_the_key_otherwise() -> None:
    """`channels_last=yes` was a ValueError Hydra printed as its own three lines (no line in
    run.log), and `channels_last=1` passed the check (1 == True) but never converted."""
    from labelmatch.errors import ConfigError

    for mode in (True, False, "auto"):
        assert ChannelsLast(mode).mode == mode
    for mode in ("yes", 1, 0):
        with pytest.raises(ConfigError, match=r"channels_last must be true, false or auto"):
            ChannelsLast(mode)
