"""The teacher's pseudo-labelling pass keeps its own score floor (0.05) while the model is built
with the official test-time floor 0.001 (docs/method.md §1-2)."""

import pytest
import torch

from labelmatch.method.teacher import PSEUDO_LABEL_SCORE_FLOOR, score_floor, teacher_forward
from labelmatch.models.faster_rcnn import build_frcnn_tiny


def _teacher(**kwargs):
    """An untrained tiny detector whose class scores straddle 0.05: background logit raised by
    4 and the class weights spread, so that each image has boxes on both sides of 0.05."""
    torch.manual_seed(0)
    model = build_frcnn_tiny(num_classes=3, **kwargs).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[0] = 4.0
        model.roi_heads.box_predictor.cls_score.weight.mul_(4)
    return model


def _images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 128, 128, generator=generator) for _ in range(2)]


def test_pseudo_labelling_detections_are_those_of_a_model_built_with_the_old_floor():
    teacher, old_floor_teacher = _teacher(), _teacher(box_score_thresh=0.05)
    assert teacher.roi_heads.score_thresh == 0.001
    images = _images()
    with torch.no_grad():
        expected = old_floor_teacher(images)
    detections = teacher_forward(teacher, images).detections
    assert teacher.roi_heads.score_thresh == 0.001  # restored
    assert sum(len(d["scores"]) for d in detections) > 0
    for got, want in zip(detections, expected):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(got[key], want[key]), key
        assert (got["scores"] >= PSEUDO_LABEL_SCORE_FLOOR).all()


def test_official_floor_then_threshold_keeps_the_same_boxes():
    """The official pass (floor 0.001, thresholds after NMS) gives the boxes >= 0.05 that the
    0.05 floor gives: a lower-scored box can neither suppress a higher one in class-wise NMS nor
    push it out of the top 100."""
    teacher = _teacher()
    images = _images()
    with torch.no_grad():
        official = teacher(images)
    ours = teacher_forward(teacher, images).detections
    for low_floor, floor_05 in zip(official, ours):
        kept = low_floor["scores"] >= PSEUDO_LABEL_SCORE_FLOOR
        assert 0 < kept.sum() < len(low_floor["scores"])  # the 0.001 floor did add boxes
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(low_floor[key][kept], floor_05[key], rtol=0, atol=0)


def test_score_floor_restores_the_threshold_after_an_error():
    teacher = _teacher()
    with pytest.raises(RuntimeError):
        with score_floor(teacher.roi_heads, 0.3):
            assert teacher.roi_heads.score_thresh == 0.3
            raise RuntimeError("inside")
    assert teacher.roi_heads.score_thresh == 0.001
