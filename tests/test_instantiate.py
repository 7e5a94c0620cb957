"""Data configs built by Hydra: the nested splits object, the inherited loader keys, bad input
reported as itself, and run directories written before the splits were nested."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from labelmatch.data.digits import DigitsSplits
from labelmatch.data.errors import DataError
from labelmatch.instantiate import instantiate_datamodule, upgrade_data_config
from tests.conftest import CONF_DIR, compose_config


def test_the_data_seed_is_the_generators_and_the_training_seed_the_loaders():
    datamodule = instantiate_datamodule(compose_config(["seed=7", "data.splits.seed=3"]).data)
    assert isinstance(datamodule.unresolved_splits, DigitsSplits)  # built, not yet generated
    assert (datamodule.unresolved_splits.seed, datamodule.seed) == (3, 7)


def test_each_loader_key_is_written_once():
    """Data configs inherit conf/data/loader/*.yaml; no data config repeats a loader key with the
    value it inherits."""
    default = OmegaConf.load(CONF_DIR / "data" / "loader" / "default.yaml")
    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        written = OmegaConf.load(path)
        repeated = [k for k in default if k in written and written[k] == default[k]]
        assert not repeated, f"{path.name} repeats {repeated}"
        assert "seed" not in written and "num_workers" not in written, path.name


def test_a_removed_flat_key_is_a_clear_hydra_error():
    with pytest.raises(Exception, match="Could not override 'data.num_labeled'"):
        compose_config(["data.num_labeled=10"])


def test_missing_file_inside_the_splits_surfaces_as_itself(tmp_path):
    cfg = compose_config(["data=voc", f"data.splits.root={tmp_path / 'none'}"])
    datamodule = instantiate_datamodule(cfg.data)
    with pytest.raises(DataError, match="data.splits.root must be"):
        datamodule.prepare_data()


def test_a_run_directory_of_the_flat_data_keys_builds_its_data(tmp_path):
    """`.hydra/config.yaml` of a run before issue #15 (`labelmatch.data.builders`)."""
    old = OmegaConf.create(
        {
            "seed": 5,
            "paths": {"cache_dir": str(tmp_path)},
            "data": {
                "_target_": "labelmatch.data.builders.digits_datamodule",
                "root": "${paths.cache_dir}/digits",
                "num_labeled": 12,
                "data_seed": 2,
                "labeled_batch_size": 4,
                "train_scales": [96, 128],
                "strong_scales": "${.train_scales}",
                "seed": "${seed}",
            },
        }
    )
    data = upgrade_data_config(old).data
    assert data._target_ == "labelmatch.data.datamodule.DetectionDataModule"
    assert OmegaConf.to_container(data.splits) == {
        "_target_": "labelmatch.data.digits.DigitsSplits",
        "root": "${paths.cache_dir}/digits",
        "num_labeled": 12,
        "seed": 2,
    }
    datamodule = instantiate_datamodule(data)
    assert datamodule.unresolved_splits.root == f"{tmp_path}/digits"
    assert (datamodule.seed, datamodule.labeled_batch_size) == (5, 4)
    assert datamodule.view_sizes["strong_scales"] == [96, 128]
    # Today's configs pass unchanged.
    today = compose_config()
    assert upgrade_data_config(today.copy()) == today
