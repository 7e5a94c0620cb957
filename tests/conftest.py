"""Shared fixtures: configs composed with Hydra's compose API, small generated data in a
session-wide cache, and the smoke run (trained once per session, reused by several tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
# The benchmark scripts import in tests as they do when run as scripts: as top-level modules,
# beside their shared helpers (benchmarks/benchmark_report.py).
sys.path.insert(0, str(REPO / "benchmarks"))

torch.set_num_threads(2)


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=overrides or [],
            return_hydra_config=return_hydra_config,
        )


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the whole session (generated digits are reused across tests)."""
    path = Path(os.environ.get("LABELMATCH_TEST_CACHE", tmp_path_factory.mktemp("cache")))
    os.environ["LABELMATCH_CACHE"] = str(path)
    return path


def run_cli(run_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "labelmatch.run", f"hydra.run.dir={run_dir}", *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def train_cli(run_dir: Path, cache_dir: Path, *overrides: str) -> Path:
    result = run_cli(run_dir, cache_dir, *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_dir) -> Path:
    """LabelMatch on the smoke experiment, trained once per session for every test using it."""
    return train_cli(tmp_path_factory.mktemp("smoke"), cache_dir, "experiment=smoke")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, cache_dir, smoke_run):
    """`reference_run(name)`: the run of `tests.behaviour.RUNS[name]`, trained once per session
    (the behaviour test and the end-to-end tests of each method share it)."""
    from tests.behaviour import RUNS

    runs: dict[str, Path] = {"smoke_labelmatch": smoke_run}

    def get(name: str) -> Path:
        if name not in runs:
            runs[name] = train_cli(tmp_path_factory.mktemp(name), cache_dir, *RUNS[name])
        return runs[name]

    return get
