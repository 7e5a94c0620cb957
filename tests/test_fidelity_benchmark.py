"""benchmarks/fidelity.py on the smoke run's checkpoint: the uncertain-overlap counts under both
metrics, the teacher's AP at both score floors, and the docs section it writes."""

import json
from pathlib import Path

import fidelity
import pytest

from labelmatch.method import criterion


def test_fidelity_measures_one_checkpoint(smoke_run: Path, tmp_path: Path, capsys) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"before\n{fidelity.MARKERS[0]}\nold\n{fidelity.MARKERS[1]}\nafter\n")
    sample_rois = criterion.sample_rois
    fidelity.main([str(smoke_run / "checkpoints/last.ckpt"), "--batches", "2", "--out", str(docs)])
    result = json.loads(capsys.readouterr().out)

    assert criterion.sample_rois is sample_rois  # its counting wrapper is taken off again
    iou, iof = result["uncertain_metric"]["iou"], result["uncertain_metric"]["iof"]
    assert iou["images"] == iof["images"] == 2 * result["batch_size"]
    # The pseudo labels come before the metric: the same uncertain boxes under both.
    assert iou["uncertain_boxes_per_image"] == iof["uncertain_boxes_per_image"]
    for counts in (iou, iof):
        assert counts["uncertain_rows_per_image"] >= 0 and counts["mined_per_image"] >= 0
    low, high = result["teacher_ap_by_floor"]["0.001"], result["teacher_ap_by_floor"]["0.05"]
    assert all(0.0 <= v <= 1.0 for v in [*low.values(), *high.values()])
    # A lower floor only adds boxes scored below the higher one: recall@100 cannot drop.
    assert low["mar_100"] >= high["mar_100"]
    assert len(result["reliable_thresholds"]) == len(result["uncertain_thresholds"]) > 0

    text = docs.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "\nold\n" not in text
    assert f"| boxes mined by RPLM | {iou['mined_per_image']:.2f} |" in text
    assert f"| AR@100 | {100 * low['mar_100']:.1f} | {100 * high['mar_100']:.1f} |" in text


def test_fidelity_refuses_a_checkpoint_without_its_run_config(smoke_run: Path, tmp_path) -> None:
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes((smoke_run / "checkpoints/last.ckpt").read_bytes())
    with pytest.raises(SystemExit, match="no .hydra/config.yaml"):
        fidelity.main([str(lone), "--batches", "1"])
