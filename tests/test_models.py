"""Detector builders: offline construction, backbone weights from a local file, the no-resize
transform, the tiny detector's training and inference outputs, and its RoIAlign shortcut."""

import pytest
import torch
from torchvision.models import resnet50
from torchvision.ops import MultiScaleRoIAlign, roi_align

from labelmatch.callbacks.channels_last import to_channels_last
from labelmatch.models import roi_align as roi_align_module
from labelmatch.models.faster_rcnn import build_frcnn_r50_fpn, build_frcnn_tiny
from labelmatch.models.roi_align import OneLevelShortcutRoIAlign
from labelmatch.models.transform import IMAGENET_MEAN, IMAGENET_STD, PreResizedTransform

TORCHVISION_LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def _targets(num_images: int, num_classes: int, height: int, width: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(num_images):
        sizes = torch.randint(16, 41, (4, 2), generator=generator).float()
        corners = torch.rand(4, 2, generator=generator) * (torch.tensor([width, height]) - sizes)
        targets.append(
            dict(
                boxes=torch.cat([corners, corners + sizes], dim=1),
                labels=torch.randint(1, num_classes + 1, (4,), generator=generator),
            )
        )
    return targets


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """A torchvision resnet50 state dict on disk, with non-default BN statistics."""
    state_dict = resnet50(weights=None).state_dict()
    state_dict["bn1.running_mean"] = torch.randn(64)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state_dict, path)
    return path, state_dict


def test_pre_resized_transform_normalises_and_pads_but_keeps_sizes():
    transform = PreResizedTransform()
    images = [torch.rand(3, 100, 70), torch.rand(3, 64, 130)]
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]])
    for training in (True, False):
        transform.train(training)
        batch, targets = transform(images, [dict(boxes=boxes), dict(boxes=boxes)])
        assert batch.image_sizes == [(100, 70), (64, 130)]
        assert batch.tensors.shape == (2, 3, 128, 160)  # padded to multiples of 32
        assert torch.equal(targets[0]["boxes"], boxes)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(batch.tensors[0, :, :100, :70], (images[0] - mean) / std)
    assert batch.tensors[0, :, 100:, :].abs().sum() == 0
    detections = [dict(boxes=boxes.clone())]
    out = transform.postprocess(detections, [(100, 70)], [(100, 70)])
    assert torch.equal(out[0]["boxes"], boxes)


@pytest.mark.parametrize("builder", ["tiny", "r50"])
def test_builders_add_background_and_use_test_time_settings(builder, resnet50_weights):
    if builder == "tiny":
        model = build_frcnn_tiny(num_classes=5)
    else:
        model = build_frcnn_r50_fpn(num_classes=5, backbone_weights=resnet50_weights[0])
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 24
    assert isinstance(model.transform, PreResizedTransform)
    assert model.transform.image_mean == list(IMAGENET_MEAN)
    # The official test-time floor 0.001 (was 0.05, which removes recall and biases AP down);
    # pseudo-labelling applies its own floor (tests/test_method_teacher.py).
    assert (model.roi_heads.score_thresh, model.roi_heads.nms_thresh) == (0.001, 0.5)
    assert model.roi_heads.detections_per_img == 100


def test_r50_uses_mmdetection_proposal_and_sampling_defaults(resnet50_weights):
    model = build_frcnn_r50_fpn(3, resnet50_weights[0], box_score_thresh=0.01)
    assert model.rpn._pre_nms_top_n == dict(training=2000, testing=1000)
    assert model.rpn._post_nms_top_n == dict(training=1000, testing=1000)
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.25
    assert model.roi_heads.score_thresh == 0.01  # keyword overrides the default


def test_r50_loads_backbone_weights_and_freezes_stem(resnet50_weights):
    path, saved = resnet50_weights
    body = build_frcnn_r50_fpn(3, backbone_weights=str(path)).backbone.body
    assert torch.equal(body.conv1.weight, saved["conv1.weight"])
    assert torch.equal(body.layer4[2].conv3.weight, saved["layer4.2.conv3.weight"])
    assert torch.equal(body.bn1.running_mean, saved["bn1.running_mean"])
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad  # trainable_backbone_layers=3: layer2-4
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"


def test_r50_accepts_wrapped_state_dict(tmp_path, resnet50_weights):
    _, saved = resnet50_weights
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": saved}, path)
    body = build_frcnn_r50_fpn(3, backbone_weights=path).backbone.body
    assert torch.equal(body.layer3[0].conv2.weight, saved["layer3.0.conv2.weight"])


def test_r50_missing_weights_file_names_path_and_never_downloads(tmp_path):
    path = tmp_path / "no_such_resnet50.pth"
    with pytest.raises(FileNotFoundError, match="no_such_resnet50.pth") as error:
        build_frcnn_r50_fpn(3, backbone_weights=path)
    assert "never downloaded" in str(error.value)


def test_r50_rejects_mismatched_state_dict(tmp_path, resnet50_weights):
    _, saved = resnet50_weights
    broken = {k: v for k, v in saved.items() if k != "layer4.2.conv3.weight"}
    broken["head.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match="broken.pth") as error:
        build_frcnn_r50_fpn(3, backbone_weights=path)
    assert "layer4.2.conv3.weight" in str(error.value) and "head.weight" in str(error.value)


def test_r50_without_weights_warns_and_predicts_in_image_frame():
    with pytest.warns(UserWarning, match="randomly"):
        model = build_frcnn_r50_fpn(2, backbone_weights=None, box_score_thresh=0.0)
    model.eval()
    with torch.no_grad():
        (detections,) = model([torch.rand(3, 96, 80)])
    assert detections["boxes"].shape[1] == 4
    assert (detections["boxes"][:, 2] <= 80).all() and (detections["boxes"][:, 3] <= 96).all()


def test_builders_reject_resize_arguments_and_bad_class_counts():
    with pytest.raises(ValueError, match="min_size"):
        build_frcnn_tiny(3, min_size=800)
    with pytest.raises(ValueError, match="num_classes"):
        build_frcnn_tiny(0)


def test_tiny_training_forward_returns_torchvision_losses_and_learns():
    torch.manual_seed(0)
    model = build_frcnn_tiny(num_classes=3).train()
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = _targets(2, num_classes=3, height=128, width=128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    for _ in range(12):
        losses = model(images, targets)
        assert set(losses) == TORCHVISION_LOSSES
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({name: loss.item() for name, loss in losses.items()})
    assert model.backbone.body.stem[0].weight.grad.abs().sum() > 0
    # Fits a fixed batch. Objectness, not the total: the classifier loss falls by predicting
    # background everywhere, while objectness only falls if the RPN localises the boxes.
    assert history[-1]["loss_objectness"] < 0.85 * history[0]["loss_objectness"]
    assert sum(history[-1].values()) < 0.7 * sum(history[0].values())


def test_tiny_eval_returns_detections_inside_unresized_image():
    torch.manual_seed(0)
    model = build_frcnn_tiny(num_classes=3, box_score_thresh=0.0).eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 128, 128), torch.rand(3, 90, 120)])
    for found, (height, width) in zip(detections, [(128, 128), (90, 120)]):
        boxes = found["boxes"]
        assert len(boxes) > 0 and len(boxes) <= 100
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
        assert found["labels"].min() >= 1 and found["labels"].max() <= 3


def test_boxes_are_decoded_in_float32_under_bf16_autocast():
    """The heads that regress boxes return float32 under autocast, so that torchvision decodes
    proposals and detections in float32: in bf16 a coordinate near 1000 px lies on an 8 px grid."""
    torch.manual_seed(0)
    model = build_frcnn_tiny(num_classes=3, box_score_thresh=0.0).eval()
    heads = model.roi_heads
    with torch.no_grad():
        heads.box_predictor.bbox_pred.weight.zero_()  # no refinement: decoding must give the
        heads.box_predictor.bbox_pred.bias.zero_()  # proposal back
    proposals = torch.tensor([[1001.3, 999.7, 1043.1, 1031.9], [517.2, 1210.6, 1263.4, 1291.1]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        objectness, deltas = model.rpn.head([torch.rand(1, 64, 8, 8)])
        logits, regression = heads.box_predictor(torch.rand(2, 256))
        detections = model([torch.rand(3, 128, 128)])
    assert {t.dtype for t in [*objectness, *deltas, logits, regression]} == {torch.float32}
    assert detections[0]["boxes"].dtype == torch.float32
    decoded = heads.box_coder.decode(regression, [proposals]).reshape(2, -1, 4)
    assert torch.allclose(decoded, proposals[:, None].expand_as(decoded), atol=1e-3)


def test_float32_heads_change_nothing_in_float32_and_survive_scripting():
    torch.manual_seed(0)
    model = build_frcnn_tiny(num_classes=3, box_score_thresh=0.0).eval()
    images = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        hooked = model(images)
        model.rpn.head._forward_hooks.clear()
        model.roi_heads.box_predictor._forward_hooks.clear()
        plain = model(images)
    assert torch.equal(hooked[0]["boxes"], plain[0]["boxes"])
    assert torch.equal(hooked[0]["scores"], plain[0]["scores"])
    torch.jit.script(build_frcnn_tiny(num_classes=3).eval())  # the hooks compile (export)


def test_channels_last_changes_the_layout_not_the_function() -> None:
    torch.manual_seed(0)
    model = build_frcnn_tiny(3).eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = model.backbone(images)
        to_channels_last(model)
        after = model.backbone(images)
    conv = model.backbone.body.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert after["0"].is_contiguous(memory_format=torch.channels_last)
    for level in before:
        torch.testing.assert_close(after[level], before[level], rtol=1e-4, atol=1e-5)


def _fpn_features(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        name: torch.randn(batch, 8, height // stride, width // stride, generator=generator)
        for name, stride in (("0", 4), ("1", 8), ("2", 16))
    }


@pytest.mark.parametrize("box_sides", [(16, 40), (16, 200)], ids=["one-level", "three-levels"])
def test_one_level_shortcut_roi_align_equals_torchvision_values_and_gradients(box_sides):
    # 16-40 px boxes all map to the stride-4 level (shortcut); up to 200 px they span three.
    image_sizes = [(256, 256)] * 2
    generator = torch.Generator().manual_seed(2)
    boxes = []
    for count in (5, 7):
        sides = torch.randint(*box_sides, (count, 2), generator=generator).float()
        corners = torch.rand(count, 2, generator=generator) * (256 - sides)
        boxes.append(torch.cat([corners, corners + sides], dim=1))
    pooled = {}
    for pooler in (MultiScaleRoIAlign, OneLevelShortcutRoIAlign):
        features = _fpn_features(2, 256, 256)
        for feature in features.values():
            feature.requires_grad_(True)
        output = pooler(["0", "1", "2"], output_size=7, sampling_ratio=1)(
            features, boxes, image_sizes
        )
        (output * torch.arange(output.numel()).view_as(output).sin()).sum().backward()
        pooled[pooler] = output.detach(), [feature.grad for feature in features.values()]
    (expected, expected_grads), (actual, actual_grads) = pooled.values()
    assert actual.shape == (12, 8, 7, 7)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(actual_grads, expected_grads):
        # a level no box maps to gets torchvision's zero gradient or none at all: the same sum
        grad = torch.zeros_like(expected_grad) if grad is None else grad
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_one_level_shortcut_pools_once_only_when_boxes_share_a_level(monkeypatch):
    calls = []

    def counting_roi_align(*args, **kwargs):
        calls.append(len(args[1]))
        return roi_align(*args, **kwargs)

    monkeypatch.setattr(roi_align_module, "roi_align", counting_roi_align)
    pooler = OneLevelShortcutRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=1)
    features = _fpn_features(1, 256, 256)
    small = torch.tensor([[10.0, 10.0, 40.0, 40.0], [100.0, 80.0, 120.0, 116.0]])
    assert pooler(features, [small], [(256, 256)]).shape == (2, 8, 7, 7)
    assert calls == [2]  # one call on the stride-4 level
    large = torch.tensor([[0.0, 0.0, 250.0, 250.0]])  # maps to the stride-16 level
    calls.clear()
    assert pooler(features, [torch.cat([small, large])], [(256, 256)]).shape == (3, 8, 7, 7)
    assert calls == [2, 0, 1]  # one call per level, the empty middle one included
    assert pooler(features, [torch.zeros(0, 4)], [(256, 256)]).shape == (0, 8, 7, 7)


def test_aligned_pooling_equals_torchvision_roi_align_aligned_on_each_boxs_level():
    """aligned=True, sampling_ratio=0 (MMDetection's RoIAlign) on four levels (strides 4-32 of a
    512 x 512 image). Level k = floor(4 + log2(side / 224)) clamped to [2, 5], minus 2:
    side 40 -> 1.5 -> level 0; 120 -> 3.1 -> 1; 250 -> 4.2 -> 2; 460 -> 5.0 -> 3."""
    generator = torch.Generator().manual_seed(3)
    strides = {"0": 4, "1": 8, "2": 16, "3": 32}
    features = {
        name: torch.randn(2, 8, 512 // s, 512 // s, generator=generator)
        for name, s in strides.items()
    }
    boxes = [
        torch.tensor([[3.3, 7.1, 43.3, 47.1], [200.0, 10.0, 320.0, 130.0]]),
        torch.tensor([[20.5, 30.25, 270.5, 280.25], [10.0, 40.0, 470.0, 500.0]]),
    ]
    levels = [[0, 1], [2, 3]]
    pooler = OneLevelShortcutRoIAlign(list(strides), output_size=7, sampling_ratio=0, aligned=True)
    pooled = pooler(features, boxes, [(512, 512)] * 2)
    assert pooled.shape == (4, 8, 7, 7)
    row = 0
    for image, (image_boxes, image_levels) in enumerate(zip(boxes, levels)):
        for box, level in zip(image_boxes, image_levels):
            name = str(level)
            expected = roi_align(
                features[name][image : image + 1],
                [box[None]],
                output_size=7,
                spatial_scale=1 / strides[name],
                sampling_ratio=0,
                aligned=True,
            )
            torch.testing.assert_close(pooled[row : row + 1], expected, rtol=0, atol=0)
            not_aligned = roi_align(
                features[name][image : image + 1], [box[None]], 7, 1 / strides[name], 0
            )
            assert not torch.allclose(pooled[row : row + 1], not_aligned)  # the shift matters
            row += 1


def test_tiny_detector_pools_with_the_one_level_shortcut():
    detector = build_frcnn_tiny(num_classes=3)
    assert isinstance(detector.roi_heads.box_roi_pool, OneLevelShortcutRoIAlign)
    assert detector.roi_heads.box_roi_pool.aligned  # as the official detector (docs/method.md §7)


def test_r50_pools_as_mmdetection_roi_align(resnet50_weights):
    """mmcv RoIAlign(output_size=7, sampling_ratio=0, aligned=True) on the four FPN levels
    (torchvision's default: sampling_ratio=2, aligned=False)."""
    pool = build_frcnn_r50_fpn(3, resnet50_weights[0]).roi_heads.box_roi_pool
    assert isinstance(pool, OneLevelShortcutRoIAlign)
    assert (pool.featmap_names, pool.output_size) == (["0", "1", "2", "3"], (7, 7))
    assert (pool.sampling_ratio, pool.aligned) == (0, True)


def test_model_config_with_another_torchvision_backbone_builds_the_project_detector():
    """conf/model/frcnn_mbv3_fpn.yaml: a MobileNetV3 FPN backbone, no weights, through
    build_frcnn_with_backbone: C + 1 outputs, no resize, losses in training."""
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    torch.manual_seed(0)
    model = instantiate(compose_config(["model=frcnn_mbv3_fpn"]).model, num_classes=10)
    assert isinstance(model.transform, PreResizedTransform)
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    # GroupNorm, no running statistics for the eval-mode teacher to read (group_norm)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.body.modules())
    model.train()
    losses = model([torch.rand(3, 128, 128) for _ in range(2)], _targets(2, 10, 128, 128))
    assert set(losses) == TORCHVISION_LOSSES
    assert all(torch.isfinite(value) for value in losses.values())
