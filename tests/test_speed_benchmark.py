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
    # The operator census runs on any device, and finds this project's own operators.
    census = reading.split("## Operators", 1)[1]
    ours = float(
        census.split("operators per step ", 1)[1].split("this project ", 1)[1].split(",")[0]
    )
    assert ours > 0 and "labelmatch/method/criterion.py" in census


def _in_package(source: str):
    """The function `in_package` defined by `source`, whose code says it lives in the package
    (labelmatch/method/made_up.py, line 1 its `def`)."""
    namespace: dict = {}
    package_file = Path(labelmatch.__file__).parent / "method" / "made_up.py"
    exec(compile(source, str(package_file), "exec"), namespace)
    return namespace["in_package"]


def test_synchronizing_lines_counts_each_waiting_line(monkeypatch) -> None:
    """The attribution, without a GPU: sync debug mode's warnings are raised by hand. A wait
    is put on the innermost line of the labelmatch package on the stack, else on the innermost
    line."""
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def waits() -> None:
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)

    # Line 3 calls waits.
    in_package = _in_package("def in_package(waits):\n    x = 1\n    waits()\n")

    def run() -> None:
        for _ in range(3):
            waits()
        in_package(waits)
        warnings.warn("something else", stacklevel=1)

    counts = dict(speed.synchronizing_lines(run))
    line_of_warn = waits.__code__.co_firstlineno + 1
    assert counts == {
        f"{__file__}:{line_of_warn} in waits": 3,
        "labelmatch/method/made_up.py:3 in in_package": 1,
    }
    assert modes == ["warn", 0]  # and set back to what it was


def test_operator_census_counts_operators_and_waits_by_source() -> None:
    """Operators from a function whose code lives in the package are put on its line; a
    boolean-mask index, `.item()`, `repeat_interleave` without `output_size` and `.tolist()`
    would wait for a GPU, an index by position and `repeat_interleave` with `output_size` would
    not."""
    source = (
        "def in_package(torch):\n"
        "    x = torch.arange(6)\n"
        "    picked = x[x > 2]\n"
        "    total = picked.sum().item()\n"
        "    by_position = x[torch.tensor([0, 2])]\n"
        "    twice = torch.repeat_interleave(x, torch.full((6,), 2), output_size=12)\n"
        "    counts = torch.repeat_interleave(x)\n"
        "    return total, by_position, twice, counts, x.tolist()\n"
    )
    census = speed.OperatorCensus()
    with census:
        total, *_ = _in_package(source)(torch)
        torch.ones(2).add_(1)  # this test's own line: "other"
    assert total == 12
    line = "labelmatch/method/made_up.py:{}".format
    assert census.waits == {line(3): 1, line(4): 1, line(7): 1, line(8): 1}
    assert census.operators[line(2)] == 1  # arange
    assert census.operators[line(3)] >= 2  # the comparison and the masked index
    assert census.operators[line(5)] >= 1 and census.operators["other"] == 2
    report = speed.census_report(census, steps=1)
    ours = sum(n for where, n in census.operators.items() if where.startswith("labelmatch/"))
    total = ours + 2  # and the two of this test's own line
    assert report[0] == (
        f"operators per step {total:.1f} (this project {ours:.1f}, torchvision 0.0, other 2.0)"
    )
    assert (
        report[1]
        == "of which would wait for a GPU 4.0 (this project 4.0, torchvision 0.0, other 0.0)"
    )
    assert f"{ours:7.1f}  labelmatch/method/made_up.py" in report  # by file
    assert "   1.0  labelmatch/method/made_up.py:3" in report  # waits by line


def test_batched_pseudo_label_steps_wait_for_a_gpu_once_whatever_the_batch() -> None:
    """The threshold split and the move between views read their group sizes once for the whole
    batch (`labelmatch.method.rows`): one wait each for 1 image and for 6, not one per image."""
    from labelmatch.data.geometry import scale_matrix
    from labelmatch.method.pseudo_labels import map_pseudo_labels, split_batch_by_thresholds

    thresholds = torch.tensor([0.7, 0.5]), torch.tensor([0.3, 0.2])
    detection = {
        "boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 8.0, 8.0], [3.0, 3.0, 6.0, 6.0]]),
        "scores": torch.tensor([0.9, 0.4, 0.1]),
        "labels": torch.tensor([1, 2, 1]),
    }
    for images in (1, 6):
        census = speed.OperatorCensus()
        with census:
            pseudo = split_batch_by_thresholds([detection] * images, *thresholds)
        assert sum(census.waits.values()) == 1, census.waits
        census = speed.OperatorCensus()
        with census:
            map_pseudo_labels(pseudo, [scale_matrix(2, 2)] * images, [(20, 20)] * images)
        assert sum(census.waits.values()) == 1, census.waits
