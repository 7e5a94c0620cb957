"""Same behaviour, bit for bit: fixed-seed runs of today's code against the fingerprints
recorded on the last revision that changed what trains (`tests/behaviour.py`; the revision is
in each reference file).

Each run's results.json (metrics, final ACT thresholds, health and best-checkpoint entries) and the
SHA-256 of its final student and teacher weights must equal the recorded ones. Bits depend on the
CPU's vector ISA, the thread count and the torch build: the comparison is with the reference of
this kind of machine (`tests/data/behaviour/`), skipped, naming the recorded ones, where there is
none (record one there first: `python -m tests.behaviour record`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.behaviour import (
    RUNS,
    SLOW_RUNS,
    fingerprint,
    machine,
    machine_slug,
    reference_for,
    references,
    train,
)


def reference_or_skip() -> dict:
    """The reference of this kind of machine, or a skip naming the machines recorded."""
    here = machine()
    reference = reference_for(here)
    if reference is None:
        recorded = [ref["machine"] for ref in references().values()]
        pytest.skip(f"no reference recorded on this machine ({here}); recorded: {recorded}")
    return reference


def assert_same(name: str, run_dir: Path) -> None:
    expected = reference_or_skip()["runs"][name]
    actual = fingerprint(run_dir)
    # Weights first: a single differing bit anywhere shows here.
    for model in ("student_sha256", "teacher_sha256"):
        assert actual[model] == expected[model], f"{name}: {model} differs"
    assert actual["global_step"] == expected["global_step"]
    assert actual["results"] == expected["results"], f"{name}: results.json differs"


def test_every_recorded_run_is_still_defined() -> None:
    assert references()
    for stem, reference in references().items():
        assert stem == machine_slug(reference["machine"])  # one file per machine
        assert set(reference["runs"]) == set(RUNS) | set(SLOW_RUNS), stem
        for name, overrides in {**RUNS, **SLOW_RUNS}.items():
            assert reference["runs"][name]["overrides"] == list(overrides), stem


def test_the_fingerprint_sees_one_changed_weight(smoke_run, tmp_path) -> None:
    """The digest is not blind: a checkpoint with one weight nudged by one ulp differs."""
    import shutil

    import torch

    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy)
    path = copy / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    key = next(k for k in checkpoint["state_dict"] if k.startswith("teacher."))
    tensor = checkpoint["state_dict"][key]
    flat = tensor.view(-1)
    flat[0] = torch.nextafter(flat[0], flat[0] + 1)
    torch.save(checkpoint, path)
    before, after = fingerprint(smoke_run), fingerprint(copy)
    assert before["student_sha256"] == after["student_sha256"]
    assert before["teacher_sha256"] != after["teacher_sha256"]


@pytest.mark.parametrize("name", list(RUNS))
def test_smoke_runs_are_bit_identical_to_the_reference(name, reference_run) -> None:
    """The runs are the session's (conftest `reference_run`), shared with the end-to-end tests."""
    reference_or_skip()
    assert RUNS["smoke_labelmatch"] == ("experiment=smoke",)  # the session's `smoke_run`
    assert_same(name, reference_run(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_RUNS))
def test_slow_runs_are_bit_identical_to_the_reference(name, tmp_path, cache_dir) -> None:
    reference_or_skip()
    assert_same(name, train(tmp_path / name, SLOW_RUNS[name], cache_dir))
