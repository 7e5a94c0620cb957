"""benchmarks/speed.py at the smoke scale on the CPU: every figure measured, the targets judged,
the docs section replaced, and `--profile`'s reading of where a step's time goes."""

import json
import math
import warnings
from pathlib import Path

import speed
import torch

import labelmatch

SMOKE = [
    *("--device cpu --steps 2 --warmup 1 --pretrain-steps 2".split()),
    *("--inference-images 8 --inference-repeats 1".split()),
    *("data.splits.num_labeled=32 data.splits.num_unlabeled=32 data.splits.num_val=16".split()),
    "data.num_workers=0",
]


def test_benchmark_measures_judges_reports_and_profiles(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"before\n{speed.BEGIN}\nold section\n{speed.END}\nafter\n")
    out, profile = tmp_path / "bench.json", tmp_path / "profile.txt"
    speed.main(["--out", str(out), "--docs", str(docs), "--profile", str(profile), *SMOKE])

    results = json.loads(out.read_text())
    for key in ("supervised_step_s", "labelmatch_step_s", "teacher_infer_s", "act_img_per_s"):
        assert math.isfinite(results[key]) and results[key] > 0, key
    # A LabelMatch step holds a supervised step and a teacher pass: it cannot cost less.
    assert results["labelmatch_step_s"] > results["supervised_step_s"]
    assert results["meta"]["device"] == "cpu" and results["meta"]["steps"] == 2
    # Read before the profile ran (its buffers do not count), and judged against 4 GiB.
    assert results["peak_rss_mib"] == results["targets"]["peak RSS <= 4 GiB"]["value"] > 0

    text = docs.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old section" not in text
    assert "| `labelmatch_step_s` |" in text and "| target | measured | bound | verdict |" in text

    reading = profile.read_text()
    assert reading.startswith("# 2 LabelMatch steps on cpu, precision 32-true")
    # cProfile's rows name the module's and the criterion's parts.
    assert "module.py" in reading and "(unsupervised_step)" in reading
    assert "criterion.py" in reading and "(rpn_loss)" in reading
    assert "## Host and device" not in reading  # CUDA only


def test_synchronizing_lines_counts_each_waiting_line(monkeypatch) -> None:
    """The attribution, without a GPU: sync debug mode's warnings are raised by hand. A wait
    is put on the innermost line of the labelmatch package on the stack, else on the innermost
    line."""
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def waits() -> None:
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)

    # A function whose code says it lives in the package (line 3 calls waits).
    source = "def in_package(waits):\n    x = 1\n    waits()\n"
    namespace: dict = {}
    package_file = Path(labelmatch.__file__).parent / "method" / "made_up.py"
    exec(compile(source, str(package_file), "exec"), namespace)

    def run() -> None:
        for _ in range(3):
            waits()
        namespace["in_package"](waits)
        warnings.warn("something else", stacklevel=1)

    counts = dict(speed.synchronizing_lines(run))
    line_of_warn = waits.__code__.co_firstlineno + 1
    assert counts == {
        f"{__file__}:{line_of_warn} in waits": 3,
        "labelmatch/method/made_up.py:3 in in_package": 1,
    }
    assert modes == ["warn", 0]  # and set back to what it was
