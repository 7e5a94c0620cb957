"""`python -m labelmatch.export` on the session's smoke run: the three formats, each loaded back
and checked against PyTorch by the command itself; the README's loading lines; the matching
that decides whether an export passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from labelmatch.checkpoints import load_module
from labelmatch.data.errors import DataError
from labelmatch.export import count_at_the_cut, export, match_detections, score_cut
from tests.conftest import CONF_DIR, REPO


def export_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


@pytest.fixture(scope="module")
def best_checkpoint(smoke_run: Path) -> Path:
    return smoke_run / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_export_is_verified_against_pytorch(best_checkpoint, cache_dir, tmp_path, fmt) -> None:
    out = tmp_path / f"teacher.{fmt}"
    description = export(export_config(f"checkpoint={best_checkpoint}", f"format={fmt}",
                                       f"out={out}"))  # fmt: skip
    assert out.is_file()
    assert json.loads(Path(f"{out}.json").read_text()) == description
    assert description["model"] == "teacher"
    assert description["class_names"] == [str(d) for d in range(10)]
    assert description["step"] == torch.load(best_checkpoint, weights_only=False)["global_step"]
    verification = description["verification"]
    assert verification["passed"] and verification["images"] == 4
    assert verification["matched"] == verification["detections"] > 0
    # Script and reload run the same kernels as eager PyTorch: identical detections.
    assert verification["max_box_error"] == verification["max_score_error"] == 0.0


def test_readme_lines_load_the_state_dict_into_the_builders_detector(best_checkpoint, tmp_path):
    out = tmp_path / "best-teacher.pth"
    export(export_config(f"checkpoint={best_checkpoint}", "format=state_dict", f"out={out}"))
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Deploying the teacher") :]
    snippet = textwrap.dedent(re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0])
    module, _ = load_module(best_checkpoint)
    results = json.loads((best_checkpoint.parents[1] / "results.json").read_text())
    val = json.loads(Path(results["val_json"]).read_text())
    file_name = Path(results["val_json"]).parent / "images" / val["images"][0]["file_name"]
    image = decode_image(str(file_name), mode=ImageReadMode.RGB) / 255.0  # test_scale = size
    namespace = {"image": image}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the snippet names the files as the export writes them
    try:
        exec(snippet, namespace)
    finally:
        os.chdir(cwd)
    detections = namespace["detections"]
    with torch.no_grad():
        expected = module.teacher([image])[0]
    assert len(expected["boxes"]) > 0
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(detections[key], expected[key]), key


def test_onnx_export_command_checks_onnxruntime_on_images_of_any_size(
    best_checkpoint, cache_dir, tmp_path
) -> None:
    """From the command line, as documented; the verification images have other sizes than
    the example the model was exported with (dynamic height and width)."""
    results = json.loads((best_checkpoint.parents[1] / "results.json").read_text())
    val = json.loads(Path(results["val_json"]).read_text())
    images = tmp_path / "images"
    images.mkdir()
    for record, size in zip(val["images"][:3], [(128, 128), (160, 96), (100, 150)]):
        source = Path(results["val_json"]).parent / "images" / record["file_name"]
        Image.open(source).convert("RGB").resize(size).save(images / f"{record['id']}.png")
    out = tmp_path / "teacher.onnx"
    env = dict(os.environ, LABELMATCH_CACHE=str(cache_dir))
    result = subprocess.run(
        [sys.executable, "-m", "labelmatch.export", f"checkpoint={best_checkpoint}",
         "format=onnx", f"out={out}", f"images={images}", f"hydra.run.dir={tmp_path / 'log'}"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verification passed (onnxruntime vs PyTorch, 3 images)" in result.stdout
    description = json.loads(Path(f"{out}.json").read_text())
    verification = description["verification"]
    assert verification["matched"] == verification["detections"] > 0
    assert verification["max_box_error"] <= 0.01 and verification["max_score_error"] <= 1e-5
    assert (description["test_scale"], description["max_size"]) == (128, 256)


def test_a_mismatch_fails_the_export_and_bad_options_are_named(best_checkpoint, tmp_path):
    with pytest.raises(RuntimeError, match=r"verification FAILED .*: 0 of \d+ PyTorch detections"):
        # A tolerance that not even identical detections meet.
        export(export_config(f"checkpoint={best_checkpoint}", "format=state_dict",
                             f"out={tmp_path / 'x.pth'}", "score_atol=-1"))  # fmt: skip
    with pytest.raises(DataError, match=r"format must be one of"):
        export(export_config(f"checkpoint={best_checkpoint}", "format=tflite"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint: no checkpoint at .*nowhere"):
        export(export_config(f"checkpoint={tmp_path / 'nowhere.ckpt'}", "format=onnx"))


def detections(boxes, labels, scores) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}  # fmt: skip


def test_matching_needs_the_same_label_a_close_box_and_a_close_score() -> None:
    reference = detections([[0, 0, 10, 10], [5, 5, 20, 20]], [1, 2], [0.9, 0.5])
    # Order does not matter; small errors within the tolerances do not either.
    exported = detections([[5, 5, 20.004, 20], [0, 0, 10, 10]], [2, 1], [0.50005, 0.9])
    only_reference, only_exported, box_error, score_error = match_detections(
        reference, exported, 0.01, 1e-4
    )
    assert only_reference == only_exported == []
    assert box_error == pytest.approx(0.004, abs=1e-5)
    assert score_error == pytest.approx(5e-5, abs=1e-6)
    for wrong in (
        detections([[5, 5, 20.02, 20], [0, 0, 10, 10]], [2, 1], [0.5, 0.9]),  # box off by 0.02
        detections([[5, 5, 20, 20], [0, 0, 10, 10]], [3, 1], [0.5, 0.9]),  # another label
        detections([[5, 5, 20, 20], [0, 0, 10, 10]], [2, 1], [0.51, 0.9]),  # score off
    ):
        assert match_detections(reference, wrong, 0.01, 1e-4)[:2] == ([1], [0])
    # Two reference boxes cannot share one exported box.
    twice = detections([[0, 0, 10, 10], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])
    assert match_detections(twice, detections([[0, 0, 10, 10]], [1], [0.9]), 0.01, 0.2)[:2] == (
        [1],
        [],
    )


def test_a_detection_only_one_side_keeps_is_excused_only_at_the_score_cut() -> None:
    """Of two models capped at 2 detections, one keeps a box scored 0.60001 that the other
    dropped for its own 0.6; below a cap, the cut is the score threshold (0.05)."""
    full = detections([[0, 0, 10, 10], [5, 5, 20, 20]], [1, 2], [0.9, 0.6])
    assert score_cut(full, score_thresh=0.05, max_detections=2) == pytest.approx(0.6)
    assert score_cut(full, score_thresh=0.05, max_detections=100) == 0.05
    other = detections([[0, 0, 10, 10], [30, 30, 40, 40]], [1, 2], [0.9, 0.60001])
    cut = score_cut(full, 0.05, 2)
    assert count_at_the_cut([1], other, cut, score_atol=1e-4) == 1
    assert count_at_the_cut([1], other, cut, score_atol=1e-6) == 0
    assert count_at_the_cut([1], other, score_cut(full, 0.05, 100), score_atol=1e-4) == 0


def test_onnx_model_takes_an_image_with_fewer_proposals_than_its_example(tmp_path) -> None:
    """With a proposal cap the images do not fill, each image has its own number of proposals:
    the pooler's output must not keep the example's count (the tracer froze len(rois))."""
    import onnxruntime

    from labelmatch.export import standalone_detector, write_model
    from labelmatch.models.faster_rcnn import build_frcnn_tiny

    torch.manual_seed(0)
    detector = standalone_detector(build_frcnn_tiny(3, rpn_post_nms_top_n_test=5000))
    example, other = torch.rand(3, 128, 128), torch.rand(3, 64, 96)
    with torch.no_grad():
        counts = [
            len(detector.rpn(*_rpn_inputs(detector, image))[0][0]) for image in (example, other)
        ]
    assert counts[0] != counts[1]
    out = tmp_path / "model.onnx"
    write_model(detector, "onnx", out, example, opset=17)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, _, _ = session.run(None, {"image": other.numpy()})
    with torch.no_grad():
        expected = detector([other])[0]["boxes"]
    torch.testing.assert_close(torch.from_numpy(boxes), expected, atol=1e-3, rtol=0)


def _rpn_inputs(detector, image):
    images, _ = detector.transform([image])
    return images, detector.backbone(images.tensors)


def test_a_verification_that_compares_nothing_fails_and_needs_an_image() -> None:
    from omegaconf import OmegaConf

    from labelmatch.data.transforms import TestTransform
    from labelmatch.export import Agreement, verification_images

    nothing = Agreement(1, 0, 0, 0, 0, 0.0, 0.0, box_atol=0.1, score_atol=1e-4)
    assert not nothing.passed
    assert "neither model detects anything on them" in nothing.line("onnxruntime")
    with pytest.raises(DataError, match="num_images must be at least 1, got 0"):
        verification_images(
            OmegaConf.create({"num_images": 0, "images": None}), TestTransform(32, 64), True
        )


def test_an_image_damaged_past_its_header_is_named_by_the_verification(tmp_path) -> None:
    """Until 2026-12-06 the decoder's RuntimeError stopped `export images=DIR` with a
    traceback (predict names and skips such a file; the export needs every image it takes)."""
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from labelmatch.data.transforms import TestTransform
    from labelmatch.export import verification_images

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    whole = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(whole[: len(whole) // 2])
    cfg = OmegaConf.create({"num_images": 2, "images": str(tmp_path)})
    with pytest.raises(DataError, match=r"images=.*: b\.png cannot be decoded"):
        verification_images(cfg, TestTransform(32, 64), True)
