"""Behaviour reference: what a run produces, fingerprinted, so that a refactor can show it
changed nothing (bit for bit) on the machine the reference was recorded on.

A fingerprint is the run's `results.json` (every metric, the final ACT thresholds, the health
counts and the best checkpoint's metrics; machine-local paths left out) and a SHA-256 of the
final student and teacher weights in `checkpoints/last.ckpt`. The runs are fixed-seed
`python -m labelmatch.run` invocations (`RUNS`); `tests/test_behaviour.py` re-runs them and
compares with the reference recorded on the same kind of machine, one file per machine in
`tests/data/behaviour/`.

Floating-point results depend on the CPU's vector instructions, the thread count and the torch
build, so each reference records those (`machine()`); the comparison is made with the reference
of a matching machine and is skipped, naming the recorded machines, where there is none. Record
a reference for your machine (before a refactor, on the code before it) with

    python -m tests.behaviour record [--slow]

(`--slow` adds the 200-step digits run, which `pytest -m slow` checks).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "tests" / "data" / "behaviour"

# name -> overrides of `python -m labelmatch.run`. The smoke runs cover every method and the
# online ACT variant in about a minute each; `digits_200` is a 200-step digits run with 100
# semi-supervised steps (two ACT refreshes, RPLM, a validation before and after the switch).
RUNS: dict[str, tuple[str, ...]] = {
    "smoke_labelmatch": ("experiment=smoke",),
    "smoke_supervised": ("experiment=smoke", "method=supervised"),
    "smoke_mean_teacher": ("experiment=smoke", "method=mean_teacher"),
    "smoke_online_act": ("experiment=smoke", "method.act.mode=online"),
}
SLOW_RUNS: dict[str, tuple[str, ...]] = {
    "digits_200": (
        "experiment=digits",
        "trainer.max_steps=200",
        "trainer.val_check_interval=100",
        "method.burn_in_steps=100",
        "method.act.interval=50",
        "checkpoint_every_n_steps=100",
    ),
}
# results.json entries that name files on this machine rather than describe the run.
MACHINE_LOCAL = ("val_json",)


@functools.cache
def machine() -> dict[str, Any]:
    """What decides the bits of a CPU run besides the code: the torch build, the CPU and its
    vector ISA, and the thread count a fresh `python -m labelmatch.run` process gets."""
    threads = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "threads": int(threads),
        "machine": platform.machine(),
    }


def machine_slug(machine: dict[str, Any]) -> str:
    """A reference's file name: CPU model, vector ISA and threads, e.g.
    `amd-epyc-avx512-2-threads` (the torch build is checked inside the file)."""
    words = f"{machine['cpu_model']} {machine['cpu_capability']} {machine['threads']} threads"
    return "-".join("".join(c if c.isalnum() else " " for c in words.lower()).split())


def references() -> dict[str, dict[str, Any]]:
    """Every recorded reference, one per machine, by file name (its `machine_slug`)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCES.glob("*.json"))}


def reference_for(here: dict[str, Any]) -> dict[str, Any] | None:
    """The reference recorded on a machine like `here`, if any."""
    return next((ref for ref in references().values() if ref["machine"] == here), None)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def weights_digest(state_dict: dict[str, torch.Tensor], prefix: str) -> str | None:
    """SHA-256 over the names, dtypes, shapes and bytes of the `prefix.*` tensors, by name."""
    digest = hashlib.sha256()
    keys = sorted(k for k in state_dict if k.startswith(prefix))
    for key in keys:
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest() if keys else None


def fingerprint(run_dir: Path) -> dict[str, Any]:
    """The run's results (paths left out) and the digests of its final weights."""
    results = json.loads((run_dir / "results.json").read_text())
    for key in MACHINE_LOCAL:
        results.pop(key, None)
    checkpoint = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    state = checkpoint["state_dict"]
    return {
        "results": results,
        "student_sha256": weights_digest(state, "student."),
        "teacher_sha256": weights_digest(state, "teacher."),
        "global_step": checkpoint["global_step"],
    }


def train(run_dir: Path, overrides: tuple[str, ...], cache_dir: Path) -> Path:
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "labelmatch.run", f"hydra.run.dir={run_dir}", *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return run_dir


def record(slow: bool, cache_dir: Path) -> dict[str, Any]:
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    runs = {**RUNS, **(SLOW_RUNS if slow else {})}
    reference: dict[str, Any] = {"revision": revision, "machine": machine(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in runs.items():
            print(f"recording {name}: {' '.join(overrides)}", flush=True)
            run_dir = train(Path(tmp) / name, overrides, cache_dir)
            reference["runs"][name] = {"overrides": list(overrides), **fingerprint(run_dir)}
    return reference


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["record"])
    parser.add_argument("--slow", action="store_true", help="add the 200-step digits run")
    parser.add_argument("--out", type=Path, help="default: tests/data/behaviour/MACHINE.json")
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("LABELMATCH_CACHE", REPO / ".cache"))
    )
    args = parser.parse_args(argv)
    reference = record(args.slow, args.cache.resolve())
    args.out = args.out or REFERENCES / f"{machine_slug(reference['machine'])}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
