"""Faster R-CNN + FPN detectors built on torchvision, never downloading anything.

Three builders, each returning a torchvision ``FasterRCNN`` whose ``transform`` is
:class:`PreResizedTransform` (no resize inside the model; see ``transform.py``):

* :func:`build_frcnn_r50_fpn`: the paper's detector (ResNet-50 FPN, MMDetection 2.10
  ``faster_rcnn_r50_fpn`` defaults), ImageNet backbone weights read from a local file.
* :func:`build_frcnn_tiny`: a narrow ResNet-style FPN detector trained from scratch, sized for the
  embedded digits data (128x128 canvases, objects 16-40 px) on a 2-core CPU.
* :func:`build_frcnn_with_backbone`: any backbone with ``out_channels`` (a torchvision one built by
  Hydra, e.g. ``conf/model/frcnn_mbv3_fpn.yaml``) under the same conventions.

``num_classes`` is always the number of foreground classes C; the predictor gets C + 1 outputs
(index 0 is background, torchvision's convention).

Both heads that regress boxes (the RPN head and the box predictor) return float32 under mixed
precision (:func:`_rpn_head_outputs_in_float32`, :func:`_box_predictor_outputs_in_float32`):
torchvision decodes boxes in the dtype of the regression, so under bf16 autocast proposals,
detections and pseudo labels would hold 8 significant bits, a step of 4-8 px at 1000 px.
"""

import logging
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d

from labelmatch.models.roi_align import OneLevelShortcutRoIAlign
from labelmatch.models.transform import IMAGENET_MEAN, IMAGENET_STD, PreResizedTransform

log = logging.getLogger(__name__)

# Test-time settings of the official config (docs/method.md §1): score floor 0.001, per-class
# NMS at IoU 0.5, at most 100 detections per image. The model owns this floor, so validation,
# `labelmatch.evaluate` and `labelmatch.predict`'s json score at the official setting (a higher
# floor only removes recall and biases AP down). Pseudo-labelling applies its own floor
# (`labelmatch.method.teacher.PSEUDO_LABEL_SCORE_FLOOR`, 0.05) around the teacher's pass.
TEST_TIME_DEFAULTS: dict[str, Any] = dict(
    box_score_thresh=0.001, box_nms_thresh=0.5, box_detections_per_img=100
)

# MMDetection 2.10 faster_rcnn_r50_fpn: RPN keeps 2000 (train) / 1000 (test) boxes per level
# before NMS and 1000 per image after it; the ROI head samples 512 proposals, 25 % positive.
R50_FPN_DEFAULTS: dict[str, Any] = dict(
    rpn_pre_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_train=1000,
    rpn_post_nms_top_n_test=1000,
    box_batch_size_per_image=512,
    box_positive_fraction=0.25,
)

# Sizes chosen for 128x128 canvases: a few hundred proposals cover <= ~10 objects per image.
TINY_DEFAULTS: dict[str, Any] = dict(
    rpn_pre_nms_top_n_train=512,
    rpn_pre_nms_top_n_test=256,
    rpn_post_nms_top_n_train=256,
    rpn_post_nms_top_n_test=128,
    rpn_batch_size_per_image=256,
    box_batch_size_per_image=128,
    box_positive_fraction=0.25,
)

# Anchors for 10-60 px objects: sizes 12 * 2^(k/2), two per FPN level (strides 4, 8, 16), so a
# square object of 12-68 px is within a factor 2^(1/4) of an anchor size: IoU ~0.71 when
# centred, just above the RPN's 0.7 positive threshold.
TINY_ANCHOR_SIZES = ((12, 17), (24, 34), (48, 68))
TINY_ASPECT_RATIOS = (0.5, 1.0, 2.0)

# Input-geometry arguments of FasterRCNN that PreResizedTransform makes meaningless.
_RESIZE_KWARGS = ("min_size", "max_size", "fixed_size", "_skip_resize")


def build_frcnn_r50_fpn(
    num_classes: int,
    backbone_weights: str | Path | None,
    trainable_backbone_layers: int = 3,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """The paper's Faster R-CNN, ResNet-50 FPN, with ImageNet weights from a local file.

    BatchNorm is frozen (``FrozenBatchNorm2d``) and the stem + first ``5 - trainable`` stages are
    frozen, as torchvision does for pretrained backbones and MMDetection does with
    ``norm_eval=True, frozen_stages=1`` (= ``trainable_backbone_layers=3``). The architecture is
    the same with ``backbone_weights=None`` so that a checkpoint (e.g. the supervised burn-in of
    the two-stage recipe, docs/method.md §1) loads into it.

    Args:
        num_classes: foreground classes C (background is added).
        backbone_weights: path to a torchvision ``resnet50`` state dict (or a dict holding it under
            "state_dict" or "model"); ``None`` leaves the backbone randomly initialised.
        trainable_backbone_layers: 0-5, counted from ``layer4`` towards the stem.
        detector_kwargs: overrides of any ``FasterRCNN`` keyword (RPN/ROI settings, ``image_mean``,
            ``image_std``, ``box_score_thresh``, ...).
    """
    _check_num_classes(num_classes)
    resnet = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    if backbone_weights is None:
        warnings.warn(
            "build_frcnn_r50_fpn: backbone_weights=None, the ResNet-50 backbone is randomly "
            "initialised with frozen BatchNorm; only useful if a full detector checkpoint is "
            "loaded afterwards.",
            stacklevel=2,
        )
    else:
        load_resnet_weights(resnet, backbone_weights)
    backbone = _resnet_fpn_extractor(resnet, trainable_backbone_layers)
    # MMDetection 2.10 faster_rcnn_r50_fpn pools with mmcv RoIAlign(output_size=7,
    # sampling_ratio=0), aligned=True by default (docs/method.md §7): adaptive samples per bin and
    # the half-pixel shift, where torchvision's default pooler has 2 samples and no shift.
    roi_pool = OneLevelShortcutRoIAlign(
        ["0", "1", "2", "3"], output_size=7, sampling_ratio=0, aligned=True
    )
    defaults = {**TEST_TIME_DEFAULTS, **R50_FPN_DEFAULTS, "box_roi_pool": roi_pool}
    return _assemble_detector(backbone, num_classes, defaults, detector_kwargs)


def load_resnet_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet state dict from ``path`` into ``resnet``, ignoring ``fc.*``.

    Raises ``FileNotFoundError`` for a missing file (weights are never downloaded) and
    ``ValueError`` naming the file and the keys when the state dict does not fit the backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ResNet-50 backbone weights not found at '{path}'. Weights are never downloaded: "
            "create the file on a machine with internet access, e.g. "
            "torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V1').state_dict(), path), "
            "and copy it here, or pass model.backbone_weights=null for a random initialisation."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types; all mean "not a state dict"
        raise ValueError(
            f"Backbone weights '{path}' cannot be read by torch.load: {error}"
        ) from error
    state_dict = _unwrap_state_dict(checkpoint, path)
    backbone_state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    try:
        result = resnet.load_state_dict(backbone_state, strict=False)
    except RuntimeError as error:  # shape mismatches are errors even with strict=False
        raise ValueError(
            f"Backbone weights '{path}' do not fit torchvision's resnet50: {error}"
        ) from error
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"Backbone weights '{path}' do not match torchvision's resnet50: missing keys "
            f"{_preview(missing)}, unexpected keys {_preview(result.unexpected_keys)}"
        )
    log.info("Loaded ResNet-50 backbone weights from %s (%d tensors).", path, len(backbone_state))


def _preview(keys: list[str], shown: int = 10) -> str:
    more = f" ... ({len(keys)} in all)" if len(keys) > shown else ""
    return f"{keys[:shown]}{more}"


def _unwrap_state_dict(checkpoint: object, path: Path) -> Mapping[str, Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                return checkpoint[key]
        if all(isinstance(v, Tensor) for v in checkpoint.values()):
            return checkpoint
    raise ValueError(
        f"Backbone weights '{path}' hold a {type(checkpoint).__name__}, expected a resnet50 "
        "state dict (name -> tensor) or a dict with it under 'state_dict' or 'model'."
    )


def build_frcnn_tiny(
    num_classes: int,
    width: int = 32,
    fpn_channels: int = 64,
    blocks_per_stage: int = 1,
    representation_size: int = 256,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """A small from-scratch Faster R-CNN FPN for 128x128 canvases with 16-40 px objects.

    Backbone: 3x3 stride-2 stem, then three stages of ``BasicBlock`` (each halving resolution and
    doubling width: ``width``, 2 ``width``, 4 ``width`` channels at strides 4, 8, 16) with
    GroupNorm, an FPN of ``fpn_channels`` on those three levels, anchors of 12-68 px, and a
    ``TwoMLPHead`` of ``representation_size``.

    Args:
        num_classes: foreground classes C (background is added).
        width: channels of the stem and first stage.
        fpn_channels: channels of every FPN level (and of the RPN head).
        blocks_per_stage: ``BasicBlock`` s per stage.
        representation_size: hidden size of the box head's two fully connected layers.
        detector_kwargs: overrides of any ``FasterRCNN`` keyword.
    """
    _check_num_classes(num_classes)
    backbone = TinyResNetFPN(width, fpn_channels, blocks_per_stage)
    anchor_generator = AnchorGenerator(
        TINY_ANCHOR_SIZES, (TINY_ASPECT_RATIOS,) * len(TINY_ANCHOR_SIZES)
    )
    # One bilinear sample per bin: a 16-40 px box on the stride-4 level spans 4-10 cells, about
    # one per 7x7 bin, which is what MMDetection's adaptive rule (sampling_ratio=0 -> ceil(bin
    # size)) gives too. torchvision's default of 2x2 samples quadruples the single-threaded CPU
    # RoIAlign backward, which was the largest cost of a training step. Boxes up to 112 px all
    # map to the stride-4 level, so the pooler usually takes its one-level shortcut.
    # aligned=True as the official detector (docs/method.md §7); for 16-40 px boxes the half-cell
    # shift it corrects is 2 px, 5-12 % of the box, at no extra cost.
    roi_pool = OneLevelShortcutRoIAlign(
        ["0", "1", "2"], output_size=7, sampling_ratio=1, aligned=True
    )
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    defaults = dict(
        TEST_TIME_DEFAULTS,
        **TINY_DEFAULTS,
        rpn_anchor_generator=anchor_generator,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
    )
    return _assemble_detector(backbone, num_classes, defaults, detector_kwargs)


def build_frcnn_with_backbone(
    num_classes: int, backbone: nn.Module, **detector_kwargs: Any
) -> FasterRCNN:
    """A Faster R-CNN around any ``backbone`` with ``out_channels`` (e.g. torchvision's
    ``backbone_utils.mobilenet_backbone`` or ``resnet_fpn_backbone``, built by Hydra from a nested
    ``_target_``), with the project's conventions: C + 1 outputs for ``num_classes`` foreground
    classes, PreResizedTransform (no resize inside the model), the test-time defaults of
    docs/method.md §1 and float32 box outputs. ``detector_kwargs``: any ``FasterRCNN`` keyword
    (``rpn_anchor_generator`` must give one size tuple per feature map of the backbone)."""
    _check_num_classes(num_classes)
    return _assemble_detector(backbone, num_classes, dict(TEST_TIME_DEFAULTS), detector_kwargs)


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes (foreground classes) must be an int >= 1: {num_classes!r}")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm of min(8, channels) groups: the norm layer of a from-scratch backbone here
    (also a torchvision backbone's ``norm_layer``, as in conf/model/frcnn_mbv3_fpn.yaml)."""
    # GroupNorm, not BatchNorm, for a from-scratch detector inside a mean teacher:
    # * the teacher runs in eval mode, so with BatchNorm it would normalise with running
    #   statistics accumulated by the *student* on a mix of labeled and strongly augmented
    #   (colour-jittered, erased) batches, which differ from the weak views the teacher sees;
    # * detection batches are small (a few images), so batch statistics are noisy, and BN
    #   behaves differently in train and eval mode; GroupNorm computes the same function in both;
    # * GroupNorm has no running buffers, so the EMA update covers exactly the learned weights.
    # GroupNorm is the standard choice for training detectors from scratch (He et al., ICCV 2019).
    return nn.GroupNorm(min(8, channels), channels)


class TinyResNetFPN(nn.Module):
    """ResNet-style body (``BasicBlock``, GroupNorm) + FPN; returns levels "0", "1", "2".

    Input ``[B, 3, H, W]`` (H, W multiples of 16; the transform pads to 32); output
    ``OrderedDict`` of ``[B, fpn_channels, H / s, W / s]`` for strides s = 4, 8, 16.
    """

    def __init__(self, width: int, fpn_channels: int, blocks_per_stage: int) -> None:
        super().__init__()
        stage_channels = [width, 2 * width, 4 * width]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Sequential(
                nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False),
                group_norm(width),
                nn.ReLU(inplace=True),
            )
        )
        in_channels = width
        for index, out_channels in enumerate(stage_channels, start=1):
            layers[f"layer{index}"] = _resnet_stage(in_channels, out_channels, blocks_per_stage)
            in_channels = out_channels
        for module in layers.values():
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):  # torchvision ResNet's initialisation
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.body = IntermediateLayerGetter(
            nn.Sequential(layers), return_layers={f"layer{i}": str(i - 1) for i in (1, 2, 3)}
        )
        self.fpn = FeaturePyramidNetwork(stage_channels, fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body(images))


def _resnet_stage(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` BasicBlocks; the first halves the resolution (stride 2)."""
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=2, bias=False),
        group_norm(out_channels),
    )
    blocks = [BasicBlock(in_channels, out_channels, 2, downsample, norm_layer=group_norm)]
    blocks += [
        BasicBlock(out_channels, out_channels, norm_layer=group_norm) for _ in range(num_blocks - 1)
    ]
    return nn.Sequential(*blocks)


def _assemble_detector(
    backbone: nn.Module,
    num_classes: int,
    defaults: dict[str, Any],
    detector_kwargs: dict[str, Any],
) -> FasterRCNN:
    """``FasterRCNN`` with ``defaults`` overridden by ``detector_kwargs``, PreResizedTransform.

    ``num_classes`` counts foreground classes; the predictor is built for ``num_classes + 1``
    unless ``defaults``/``detector_kwargs`` supply their own ``box_predictor``.
    """
    resize_kwargs = sorted(set(detector_kwargs) & set(_RESIZE_KWARGS))
    if resize_kwargs:
        raise ValueError(
            f"{resize_kwargs} have no effect: the detector never resizes (PreResizedTransform); "
            "set image sizes in the data pipeline instead."
        )
    kwargs = {**defaults, **detector_kwargs}
    image_mean = kwargs.pop("image_mean", IMAGENET_MEAN)
    image_std = kwargs.pop("image_std", IMAGENET_STD)
    size_divisible = kwargs.pop("size_divisible", 32)
    with_background = None if kwargs.get("box_predictor") is not None else num_classes + 1
    model = FasterRCNN(backbone, num_classes=with_background, **kwargs)
    model.transform = PreResizedTransform(image_mean, image_std, size_divisible)
    model.rpn.head.register_forward_hook(_rpn_head_outputs_in_float32)
    model.roi_heads.box_predictor.register_forward_hook(_box_predictor_outputs_in_float32)
    return model


# torchvision's BoxCoder.decode casts the boxes it refines to the regression's dtype. Under bf16
# autocast the heads' convolutions and linear layers give bf16, whose 8 significant bits put a
# coordinate near 1000 px on a 4-8 px grid: proposals, the teacher's detections (the pseudo
# labels), RPLM's refined boxes and evaluation's boxes would all carry that error (a zero
# refinement of 2000 boxes of 20-100 px in a 1333 x 800 image: mean IoU 0.90 with the exact box,
# 39 % below 0.9, up to 12 px off; in fp16 0.987 and 1.5 px). Returned as float32, boxes are
# decoded in float32; only the regression itself keeps bf16's relative error (about 0.4 % of an
# offset). In float32 `.float()` returns the tensor itself: nothing changes.
# Hooks rather than subclasses keep torchvision's modules, state-dict keys and TorchScript export.
def _rpn_head_outputs_in_float32(
    module: nn.Module, inputs: tuple[list[Tensor]], output: tuple[list[Tensor], list[Tensor]]
) -> tuple[list[Tensor], list[Tensor]]:
    """RPNHead's (objectness per level, box deltas per level), in float32."""
    return [t.float() for t in output[0]], [t.float() for t in output[1]]


def _box_predictor_outputs_in_float32(
    module: nn.Module, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """The box predictor's (class logits [N, C+1], box regression [N, (C+1)·4]), in float32."""
    return output[0].float(), output[1].float()
