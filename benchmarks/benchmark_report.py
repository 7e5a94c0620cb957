"""What the benchmark scripts share: the config and data they run on, and when they report, the
machine and their docs section."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from labelmatch.instantiate import instantiate_datamodule

REPO = Path(__file__).resolve().parents[1]


def repo_config(overrides: Sequence[str]) -> DictConfig:
    """This checkout's `conf/` composed with `overrides`, as `python -m labelmatch.run` would."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def fitted_datamodule(data: DictConfig) -> Any:
    """The data module of a `data` config, its files made or checked (`prepare_data`) and its
    labeled, unlabeled and val splits set up (bad input raised as the entry points raise it)."""
    datamodule = instantiate_datamodule(data, use_unlabeled=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def machine_description() -> str:
    """Cores this process may use, CPU model (with the vector instructions torch uses and, on
    x86, family and model numbers: hosts that share a model name, as "AMD EPYC" does across
    generations, can round differently), GPU, torch and Python versions."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        field = lambda name: re.findall(rf"^{name}\s*:\s*(.+)$", text, re.MULTILINE)  # noqa: E731
        models, family, model = field("model name"), field("cpu family"), field("model")
        cpu = models[0].strip() if models else cpu
        if family and model:
            cpu += f" (family {family[0].strip()} model {model[0].strip()})"
    cpu += f" {torch.backends.cpu.get_cpu_capability()}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cores} cores (nproc), {cpu}, {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def replace_section(path: Path, begin_marker: str, end_marker: str, section: str) -> None:
    """Replace the text between the markers of `path` (markers kept) with `section`, append
    the marked section if neither marker is there, or create the file with it."""
    block = f"{begin_marker}\n{section}\n{end_marker}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks\n\n{block}\n")
        return
    text = path.read_text()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if (begin == -1) != (end == -1) or end < begin:
        sys.exit(f"{path}: the markers {begin_marker} and {end_marker} must both appear, in order")
    if begin == -1:
        path.write_text(text.rstrip("\n") + f"\n\n{block}\n")
    else:
        path.write_text(text[:begin] + block + text[end + len(end_marker) :])
