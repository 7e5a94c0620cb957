"""The unlabeled criterion, L_u on strong views (docs/method.md §3-4): its config, three-way ROI
sampling, the hard Fast R-CNN loss, proposal self-assignment through the teacher's ROI head, and
RPLM as an option of the method config."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BoxCoder

from labelmatch.data.geometry import scale_matrix
from labelmatch.method import criterion
from labelmatch.method.assignment import ProposalKind
from labelmatch.method.criterion import (
    RPLMConfig,
    SampledRois,
    TeacherOnUncertain,
    UnlabeledCriterion,
    UnlabeledCriterionConfig,
    sample_rois,
)
from labelmatch.method.pseudo_labels import PseudoLabels
from labelmatch.method.teacher import teacher_forward
from labelmatch.models.faster_rcnn import build_frcnn_tiny

NEG, POS, UNC = int(ProposalKind.NEGATIVE), int(ProposalKind.POSITIVE), int(ProposalKind.UNCERTAIN)
LOSS_NAMES = {"rpn_objectness", "rpn_box", "roi_cls", "roi_box", "roi_soft"}


def _pseudo(reliable=(), reliable_labels=(), uncertain=(), uncertain_labels=()) -> PseudoLabels:
    return PseudoLabels(
        reliable_boxes=torch.tensor(reliable, dtype=torch.float32).reshape(-1, 4),
        reliable_labels=torch.tensor(reliable_labels, dtype=torch.long),
        uncertain_boxes=torch.tensor(uncertain, dtype=torch.float32).reshape(-1, 4),
        uncertain_labels=torch.tensor(uncertain_labels, dtype=torch.long),
        uncertain_scores=torch.full((len(uncertain_labels),), 0.4),
    )


# ----------------------------------------------------------------------------- sample_rois
RELIABLE = [0.0, 0.0, 20.0, 20.0]
UNCERTAIN = [40.0, 40.0, 60.0, 60.0]
IMAGE0_PROPOSALS = torch.tensor(
    [
        [0.0, 0.0, 20.0, 18.0],  # 0: IoU 0.9 with the reliable box -> positive
        [42.0, 42.0, 58.0, 58.0],  # 1: inside the uncertain box (IoF 1) -> uncertain
        [70.0, 70.0, 90.0, 90.0],  # 2: overlaps nothing -> negative
        [0.0, 0.0, 20.0, 50.0],  # 3: IoU 0.4 with the reliable box, in [bg 0.3, fg 0.5) -> ignored
        [30.0, 40.0, 50.0, 60.0],  # 4: IoF 0.5 (IoU 1/3) with the uncertain box -> uncertain
    ]
)
IMAGE1_PROPOSALS = torch.tensor(
    [
        [22.0, 22.0, 38.0, 38.0],  # 0: inside uncertain box 1
        [60.0, 60.0, 80.0, 80.0],  # 1: negative (no reliable box at all)
    ]
)
IMAGE1_UNCERTAIN = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]


def _sample(metric: str = "iof", num_samples: int = 16) -> SampledRois:
    # The tests below were written for IoF (the former default) and still pin it where they
    # rely on proposal 4 being uncertain; the official IoU is tested separately.
    pseudo = [
        _pseudo([RELIABLE], [3], [UNCERTAIN], [2]),
        _pseudo(uncertain=IMAGE1_UNCERTAIN, uncertain_labels=[1, 4]),
    ]
    return sample_rois(
        [IMAGE0_PROPOSALS, IMAGE1_PROPOSALS],
        pseudo,
        num_samples=num_samples,
        positive_fraction=0.5,
        fg_iou=0.5,
        bg_iou=0.3,
        uncertain_threshold=0.5,
        uncertain_metric=metric,
    )


def test_sample_rois_three_way_rows_with_pseudo_boxes_as_proposals():
    rois = _sample()
    # Quota 8 holds every positive and uncertain candidate, so nothing is subsampled and rows are
    # [positives, uncertain, negatives] per image, in candidate order (proposals, then pseudo
    # boxes). Image 0 candidates: 5 proposals, reliable box (5), uncertain box (6).
    torch.testing.assert_close(
        rois.proposals[0],
        torch.cat([IMAGE0_PROPOSALS, torch.tensor([RELIABLE, UNCERTAIN])])[[0, 5, 1, 4, 6, 2]],
    )
    # Image 1 candidates: 2 proposals, uncertain boxes 0 and 1 (2, 3).
    torch.testing.assert_close(
        rois.proposals[1],
        torch.cat([IMAGE1_PROPOSALS, torch.tensor(IMAGE1_UNCERTAIN)])[[0, 2, 3, 1]],
    )
    assert rois.kind.tolist() == [POS, POS, UNC, UNC, UNC, NEG] + [UNC, UNC, UNC, NEG]
    assert rois.labels.tolist() == [3, 3, 2, 2, 2, 0] + [4, 1, 4, 0]
    assert rois.uncertain_box.tolist() == [-1, -1, 0, 0, 0, -1] + [1, 0, 1, -1]
    zeros = [0.0, 0.0, 0.0, 0.0]
    expected_targets = [RELIABLE, RELIABLE, UNCERTAIN, UNCERTAIN, UNCERTAIN, zeros]
    expected_targets += [IMAGE1_UNCERTAIN[1], IMAGE1_UNCERTAIN[0], IMAGE1_UNCERTAIN[1], zeros]
    torch.testing.assert_close(rois.targets, torch.tensor(expected_targets))


def test_sample_rois_iou_metric_leaves_the_low_iou_proposal_out():
    rois = _sample(metric="iou")
    # Proposal 4 has IoU 1/3 < 0.5 with the uncertain box: not uncertain; 1/3 >= bg 0.3, so not
    # negative either (the official uncertain assigner run leaves it at -1): it is never sampled.
    # Proposal 1 (IoU 0.64) stays uncertain.
    torch.testing.assert_close(
        rois.proposals[0],
        torch.cat([IMAGE0_PROPOSALS, torch.tensor([RELIABLE, UNCERTAIN])])[[0, 5, 1, 6, 2]],
    )
    assert rois.kind[:5].tolist() == [POS, POS, UNC, UNC, NEG]


def test_sample_rois_draws_uncertain_rows_from_what_positives_leave_of_the_quota():
    rois = _sample(num_samples=6)  # quota int(6 * 0.5) = 3: 2 positives + 1 of 3 uncertain
    image0_kinds = rois.kind[: len(rois.proposals[0])]
    assert (image0_kinds == POS).sum() == 2
    assert (image0_kinds == UNC).sum() == 1
    assert (image0_kinds == NEG).sum() == 1  # only one negative candidate exists
    assert len(rois.labels) == len(rois.targets) == len(rois.kind) == len(rois.uncertain_box)
    assert sum(len(p) for p in rois.proposals) == len(rois.kind)


# ----------------------------------------------------------------------------- config
def test_from_method_config_maps_the_user_keys():
    config = UnlabeledCriterion.from_method_config(
        {
            "name": "labelmatch",
            "uncertain": "ignore",
            "uncertain_threshold": 0.4,
            "uncertain_metric": "iof",
            "tpt": 0.3,
            "tps": 2.0,
            "rplm": {"enabled": False, "score": 0.7, "iou": 0.6},
        }
    ).config
    assert config == UnlabeledCriterionConfig(
        uncertain="ignore",
        uncertain_threshold=0.4,
        uncertain_metric="iof",
        teacher_temperature=0.3,
        student_temperature=2.0,
        rplm=RPLMConfig(enabled=False, score=0.7, iou=0.6),
    )
    # Missing keys: the official defaults (docs/method.md §3-4).
    defaults = UnlabeledCriterion.from_method_config({"name": "labelmatch"}).config
    assert defaults == UnlabeledCriterionConfig()
    assert (defaults.uncertain, defaults.teacher_temperature, defaults.student_temperature) == (
        "self",
        0.5,
        1.0,
    )
    assert defaults.rplm == RPLMConfig(enabled=True, score=0.8, iou=0.8)


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ({"uncertain": "maybe"}, "method.uncertain"),
        ({"uncertain_metric": "giou"}, "method.uncertain_metric"),
        ({"uncertain_threshold": 1.5}, "method.uncertain_threshold"),
        ({"tpt": 0.0}, "method.tpt"),
        ({"tps": -1.0}, "method.tps"),
        ({"rplm": {"score": 1.2}}, "method.rplm.score"),
        ({"rplm": {"iou": -0.1}}, "method.rplm.iou"),
    ],
)
def test_invalid_method_keys_are_refused_naming_the_key(method, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        UnlabeledCriterion.from_method_config(method)


# ----------------------------------------------------------------------------- hard ROI loss
def test_hard_roi_loss_hand_computed():
    heads = SimpleNamespace(box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0)))  # torchvision ROI weights
    unit = [0.0, 0.0, 10.0, 10.0]
    rois = SampledRois(  # rows in sampling order: positive, uncertain, uncertain, negative
        proposals=[torch.tensor([unit, unit, unit, unit])],
        labels=torch.tensor([1, 2, 2, 0]),
        # Row 0 regresses to a box shifted by 2 px: dx = 10 * 2/10 = 2. Row 2 to a box twice as
        # wide: dx = 10 * 5/10 = 5, dw = 5 * log 2. Row 1 (not used below) to its own proposal.
        targets=torch.tensor([[2.0, 0.0, 12.0, 10.0], unit, [0.0, 0.0, 20.0, 10.0], [0.0] * 4]),
        kind=torch.tensor([POS, UNC, UNC, NEG]),
        uncertain_box=torch.tensor([-1, 0, 0, -1]),
        counts=[(1, 2, 1)],
    )
    # Cross entropy per row: row 3 (label 0) ln 3; row 0 (label 1) -ln(2/4) = ln 2; row 2 (label 2)
    # -ln(4/6) = ln 1.5; row 1 would cost -ln(1/(2 + e^5)) but must never be read.
    class_logits = torch.log(
        torch.tensor([[1.0, 2.0, 1.0], [math.exp(5), 1.0, 1.0], [1.0, 1.0, 4.0], [1.0, 1.0, 1.0]])
    ).requires_grad_(True)
    # Prediction 0 in each row's own class columns, 7 in the others (which must not be read).
    box_regression = torch.full((4, 3, 4), 7.0)
    box_regression[torch.arange(4), rois.labels] = 0.0
    box_regression = box_regression.reshape(4, 3 * 4).requires_grad_(True)

    def smooth_l1(x: float) -> float:  # beta = 1/9, prediction 0
        return abs(x) - 0.5 / 9 if abs(x) >= 1 / 9 else 0.5 * x * x * 9

    # Only the reliable positive is positive: the uncertain rows 1, 2 take no part in the
    # classification loss, which is divided by the 2 hard rows (MMDetection's avg_factor = rows
    # with label weight > 0); the box loss is divided by all 4 sampled rows (bbox_targets.size(0)).
    hard_roi_loss = UnlabeledCriterion().reliable_loss
    cls, box = hard_roi_loss(heads, class_logits, box_regression, rois, positive=rois.kind == POS)
    assert cls.item() == pytest.approx((math.log(3) + math.log(2)) / 2)
    assert box.item() == pytest.approx(smooth_l1(2.0) / 4)

    # RPLM promotes row 2: it joins the hard rows with its class (3 hard rows now) and its box.
    cls, box = hard_roi_loss(
        heads, class_logits, box_regression, rois, positive=torch.tensor([1, 0, 1, 0]).bool()
    )
    assert cls.item() == pytest.approx((math.log(3) + math.log(2) + math.log(1.5)) / 3)
    assert box.item() == pytest.approx(
        (smooth_l1(2.0) + smooth_l1(5.0) + smooth_l1(5 * math.log(2))) / 4, rel=1e-5
    )

    # No positive at all: the negative alone is the classification loss; a zero box loss still
    # in the graph.
    cls, box = hard_roi_loss(
        heads, class_logits, box_regression, rois, positive=torch.zeros(4, dtype=torch.bool)
    )
    assert cls.item() == pytest.approx(math.log(3))
    assert box.item() == 0.0 and box.requires_grad

    # Nothing hard (only soft uncertain rows): zero, not NaN, and in the graph.
    soft_only = SampledRois(
        rois.proposals,
        rois.labels,
        rois.targets,
        torch.full((4,), UNC),
        rois.uncertain_box,
        [(0, 4, 0)],
    )
    cls, _ = hard_roi_loss(
        heads, class_logits, box_regression, soft_only, positive=torch.zeros(4, dtype=torch.bool)
    )
    assert cls.item() == 0.0 and cls.requires_grad


# ----------------------------------------------------------------------------- the whole criterion
@dataclass
class Run:
    """One call of the criterion with what passed through it recorded."""

    student: FasterRCNN
    teacher: FasterRCNN
    losses: dict[str, torch.Tensor]
    stats: dict[str, float]
    rois: SampledRois
    student_logits: torch.Tensor  # [M, K] every sampled row
    teacher_logits: torch.Tensor | None  # [Mu, K] the teacher's logits on the uncertain rows
    teacher_pool_proposals: list[torch.Tensor] | None  # what the teacher's RoIAlign received
    mining_calls: list[tuple[torch.Tensor, ...]]
    rpn_targets: list[dict[str, torch.Tensor]]


def _detectors(seed: int = 0) -> tuple[FasterRCNN, FasterRCNN]:
    torch.manual_seed(seed)
    student = build_frcnn_tiny(num_classes=3).train()
    teacher = copy.deepcopy(student).eval()
    teacher.requires_grad_(False)
    return student, teacher


def _images(size: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=generator) for _ in range(2)]


# One reliable and one uncertain box per image (96x96 views), labels differ between images.
PSEUDO_96 = [
    dict(
        reliable=[[10.0, 10.0, 40.0, 40.0]],
        reliable_labels=[1],
        uncertain=[[50.0, 50.0, 86.0, 80.0]],
        uncertain_labels=[2],
    ),
    dict(
        reliable=[[56.0, 8.0, 90.0, 36.0]],
        reliable_labels=[3],
        uncertain=[[8.0, 44.0, 40.0, 88.0]],
        uncertain_labels=[3],
    ),
]


def _run(
    student: FasterRCNN,
    teacher: FasterRCNN,
    weak_images: list[torch.Tensor],
    strong_images: list[torch.Tensor],
    pseudo_weak: list[PseudoLabels],
    strong_to_weak: list[torch.Tensor],
    mining=None,
    uncertain_mode: str = "self",
    sampling_seed: int = 0,
    rplm: RPLMConfig | None = None,
) -> Run:
    """`mining`: a policy replacing RPLM's per-image decision (RPLM on); without one, RPLM is
    `rplm` (default: off)."""
    teacher_out = teacher_forward(teacher, weak_images)
    # The test's pseudo labels are made in the weak frame and moved, as the module does.
    pseudo_strong = [
        p.map(torch.linalg.inv(m), tuple(image.shape[-2:]))
        for p, m, image in zip(pseudo_weak, strong_to_weak, strong_images)
    ]
    recorded: dict = {"mining_calls": []}

    def recording_sample_rois(*args, **kwargs):
        recorded["rois"] = sample_rois(*args, **kwargs)
        return recorded["rois"]

    def record_student_logits(module, inputs, output):
        recorded["student_logits"] = output[0].detach()

    def record_teacher_logits(module, inputs, output):
        recorded["teacher_logits"] = output[0]

    def record_teacher_pool(module, args):
        recorded["teacher_pool_proposals"] = [p.clone() for p in args[1]]

    def record_rpn_targets(module, args):
        recorded["rpn_targets"] = args[2]

    class RecordingCriterion(UnlabeledCriterion):
        def promoted_boxes(self, *args):
            recorded["mining_calls"].append(args)
            return mining(*args) if mining is not None else super().promoted_boxes(*args)

    if rplm is None:
        rplm = RPLMConfig(enabled=mining is not None)
    unlabeled_criterion = RecordingCriterion(
        UnlabeledCriterionConfig(uncertain=uncertain_mode, uncertain_metric="iou", rplm=rplm)
    )

    hooks = [
        student.roi_heads.box_predictor.register_forward_hook(record_student_logits),
        teacher.roi_heads.box_predictor.register_forward_hook(record_teacher_logits),
        teacher.roi_heads.box_roi_pool.register_forward_pre_hook(record_teacher_pool),
        student.rpn.register_forward_pre_hook(record_rpn_targets),
    ]
    torch.manual_seed(sampling_seed)  # ROI sampling draws from the global generator
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(criterion, "sample_rois", recording_sample_rois)
        losses, stats = unlabeled_criterion(
            student,
            teacher,
            strong_images,
            pseudo_strong,
            pseudo_weak,
            strong_to_weak,
            teacher_out,
        )
    for hook in hooks:
        hook.remove()
    return Run(
        student,
        teacher,
        losses,
        stats,
        recorded["rois"],
        recorded["student_logits"],
        recorded.get("teacher_logits"),
        recorded.get("teacher_pool_proposals"),
        recorded["mining_calls"],
        recorded["rpn_targets"],
    )


def _same_view_run(pseudo_specs=PSEUDO_96, device: str = "cpu", **kwargs) -> Run:
    """Teacher = student, the weak view is the strong view, identity mapping: the teacher's ROI
    head must then see exactly the student's uncertain rows."""
    student, teacher = (detector.to(device) for detector in _detectors())
    images = [image.to(device) for image in _images(96)]
    pseudo = [
        PseudoLabels(**{name: value.to(device) for name, value in vars(_pseudo(**spec)).items()})
        for spec in pseudo_specs
    ]
    identity = [torch.eye(3, device=device)] * 2
    return _run(student, teacher, images, images, pseudo, identity, **kwargs)


@pytest.fixture(scope="module")
def plain_run() -> Run:
    """Self-assignment without mining; its graph is backpropagated once, by the backward test."""
    return _same_view_run()


def _soft_targets_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-row Σ_c −softmax(z_t / 0.5) log softmax(z_s / 1.0) (Eq. 7, official temperatures)."""
    p_teacher = F.softmax(teacher_logits / 0.5, dim=-1)
    return -(p_teacher * F.log_softmax(student_logits, dim=-1)).sum(dim=-1)


def test_self_assignment_losses_are_finite_and_soft_loss_matches_eq7(plain_run):
    run = plain_run
    assert set(run.losses) == LOSS_NAMES
    assert all(torch.isfinite(loss) for loss in run.losses.values())
    assert run.stats == {
        "reliable_per_image": 1.0,
        "uncertain_per_image": 1.0,
        "mined_per_image": 0.0,
    }

    # The RPN learns from reliable and uncertain boxes alike.
    for targets, spec in zip(run.rpn_targets, PSEUDO_96):
        torch.testing.assert_close(
            targets["boxes"], torch.tensor(spec["reliable"] + spec["uncertain"])
        )
        assert targets["labels"].tolist() == spec["reliable_labels"] + spec["uncertain_labels"]

    uncertain_rows = run.rois.kind == UNC
    assert uncertain_rows.sum() > 0
    # Same weights, same image, same frame: the teacher's logits are the student's on the
    # uncertain rows, in row order (image 0's rows, then image 1's).
    torch.testing.assert_close(
        run.teacher_logits, run.student_logits[uncertain_rows], rtol=1e-4, atol=1e-4
    )
    expected = _soft_targets_loss(run.student_logits[uncertain_rows], run.teacher_logits).sum()
    num_sampled = run.student.roi_heads.fg_bg_sampler.batch_size_per_image  # 128 per image
    # The same float32 terms summed in another order: relative error below n * eps (~1e-5 here).
    assert run.losses["roi_soft"].item() == pytest.approx(
        expected.item() / (2 * num_sampled), rel=1e-5
    )
    assert run.losses["roi_soft"].item() > 0


def test_soft_loss_takes_its_target_from_the_teacher_and_trains_the_student():
    """Eq. 7 with a teacher whose classifier differs from the student's: the loss is the
    teacher's softened distribution against the student's (not the other way round, not the
    student against itself), and its gradient reaches the student's classifier only."""
    student, teacher = _detectors()
    classifier = teacher.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        classifier.weight.add_(torch.randn(classifier.weight.shape) * 0.5)
    images = _images(96)
    pseudo = [_pseudo(**spec) for spec in PSEUDO_96]
    run = _run(student, teacher, images, images, pseudo, [torch.eye(3)] * 2)
    student_logits = run.student_logits[run.rois.kind == UNC]
    assert (run.teacher_logits - student_logits).abs().max() > 0.1

    normalizer = 2 * student.roi_heads.fg_bg_sampler.batch_size_per_image
    expected = _soft_targets_loss(student_logits, run.teacher_logits).sum() / normalizer
    swapped = _soft_targets_loss(run.teacher_logits, student_logits).sum() / normalizer
    itself = _soft_targets_loss(student_logits, student_logits).sum() / normalizer
    assert run.losses["roi_soft"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(swapped - expected) > 0.01 * expected and abs(itself - expected) > 0.01 * expected

    run.losses["roi_soft"].backward()
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert classifier.weight.grad is None


def test_backward_reaches_the_student_and_never_the_teacher(plain_run):
    student, teacher = plain_run.student, plain_run.teacher
    sum(plain_run.losses.values()).backward()

    for module in (
        student.backbone,
        student.rpn,
        student.roi_heads.box_head,
        student.roi_heads.box_predictor,
    ):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_losses_are_computed_on_the_inputs_device(device):
    # mining=None once built its "nothing promoted" mask on the CPU, which broke CUDA runs.
    run = _same_view_run(device=device)
    assert (run.rois.kind == UNC).sum() > 0
    for loss in run.losses.values():
        assert loss.device.type == device and torch.isfinite(loss)
    assert run.losses["roi_soft"].item() > 0
    # RPLM on, at thresholds every box passes: its batched clipping and box offsets run on the
    # device too, and every uncertain box is promoted (as on the CPU, below).
    mined = _same_view_run(device=device, rplm=RPLMConfig(enabled=True, score=0.0, iou=0.0))
    assert mined.stats["mined_per_image"] == 1.0 and mined.losses["roi_soft"].item() == 0.0
    for loss in mined.losses.values():
        assert loss.device.type == device and torch.isfinite(loss)


def test_without_uncertain_boxes_the_soft_loss_is_a_zero_in_the_graph():
    specs = [{**spec, "uncertain": [], "uncertain_labels": []} for spec in PSEUDO_96]
    run = _same_view_run(pseudo_specs=specs)
    assert (run.rois.kind == UNC).sum() == 0
    assert run.teacher_logits is None  # the teacher's ROI head was never asked
    soft = run.losses["roi_soft"]
    assert soft.item() == 0.0 and soft.requires_grad
    assert run.stats["uncertain_per_image"] == 0.0
    assert all(torch.isfinite(loss) for loss in run.losses.values())


def test_a_batch_without_pseudo_labels_keeps_every_loss_and_parameter_in_the_graph():
    """DDP (without find_unused_parameters) needs a gradient for every student parameter from
    every rank at every step: with no pseudo box at all, the losses stay finite and in the graph
    and the backward still reaches every parameter."""
    run = _same_view_run(pseudo_specs=[{}, {}])
    assert run.stats["reliable_per_image"] == run.stats["uncertain_per_image"] == 0.0
    assert all(torch.isfinite(loss) and loss.requires_grad for loss in run.losses.values())
    sum(run.losses.values()).backward()
    trainable = [p for p in run.student.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_ignore_mode_gives_the_uncertain_rows_no_loss(plain_run):
    run = _same_view_run(uncertain_mode="ignore")
    assert (run.rois.kind == UNC).sum() > 0  # they are still sampled, just without a loss
    assert run.teacher_logits is None
    assert run.losses["roi_soft"].item() == 0.0 and run.losses["roi_soft"].requires_grad
    # Same sampling seed, same rows: the hard loss is that of self-assignment without mining.
    assert torch.equal(run.rois.kind, plain_run.rois.kind)
    torch.testing.assert_close(run.losses["roi_cls"], plain_run.losses["roi_cls"])
    torch.testing.assert_close(run.losses["roi_box"], plain_run.losses["roi_box"])


def _promote_all(boxes, labels, proposal_box_index, refined_boxes, class_scores):
    return torch.ones(len(boxes), dtype=torch.bool)


def _promote_none(boxes, labels, proposal_box_index, refined_boxes, class_scores):
    return torch.zeros(len(boxes), dtype=torch.bool)


def _promote_class_2(boxes, labels, proposal_box_index, refined_boxes, class_scores):
    return labels == 2


def test_mining_nothing_equals_rplm_off(plain_run):
    plain = plain_run
    none_promoted = _same_view_run(mining=_promote_none)
    assert none_promoted.stats["mined_per_image"] == plain.stats["mined_per_image"] == 0.0
    for name in LOSS_NAMES:
        torch.testing.assert_close(none_promoted.losses[name], plain.losses[name])


def test_promoting_every_box_moves_its_rows_from_soft_to_hard(plain_run):
    plain = plain_run
    mined = _same_view_run(mining=_promote_all)
    assert mined.stats["mined_per_image"] == 1.0  # one uncertain box per image, both promoted
    assert mined.losses["roi_soft"].item() == 0.0  # every uncertain row has weight 0
    assert mined.losses["roi_soft"].requires_grad
    # Same sampled rows; the promoted rows join the hard classification loss (numerator and
    # count: a mean over the hard rows, MMDetection's avg_factor) and add box regression.
    assert torch.equal(mined.rois.kind, plain.rois.kind)
    for run, hard in (
        (plain, plain.rois.kind != UNC),
        (mined, torch.ones_like(mined.rois.kind).bool()),
    ):
        expected = F.cross_entropy(run.student_logits[hard], run.rois.labels[hard])
        torch.testing.assert_close(run.losses["roi_cls"], expected, rtol=1e-5, atol=1e-6)
    assert mined.losses["roi_box"] > plain.losses["roi_box"]


def test_mining_policy_sees_each_images_uncertain_boxes_and_teacher_refinements():
    """RPLM decides for all images at once: the uncertain boxes of every image in image order,
    each row pointing at its own image's box among them."""
    run = _same_view_run(mining=_promote_class_2)
    assert len(run.mining_calls) == 1
    boxes, labels, box_index, refined, scores = run.mining_calls[0]
    torch.testing.assert_close(
        boxes, torch.tensor([box for spec in PSEUDO_96 for box in spec["uncertain"]])
    )
    assert labels.tolist() == [c for spec in PSEUDO_96 for c in spec["uncertain_labels"]]
    start, first_box, expected_index = 0, 0, []
    for image, spec in enumerate(PSEUDO_96):
        stop = start + len(run.rois.proposals[image])
        image_rows = run.rois.kind[start:stop] == UNC
        expected_index += (run.rois.uncertain_box[start:stop][image_rows] + first_box).tolist()
        first_box += len(spec["uncertain"])
        start = stop
    assert box_index.tolist() == expected_index
    assert refined.shape == (len(expected_index), 4)
    # The teacher's softmax score of the box's class, per proposal.
    assert torch.all((scores > 0) & (scores < 1))

    # Image 0's box (class 2) is promoted, image 1's (class 3) is not: only image 1's
    # uncertain rows remain in the soft loss.
    assert run.stats["mined_per_image"] == 0.5
    uncertain_rows = run.rois.kind == UNC
    image_of_row = torch.cat([torch.full((len(p),), i) for i, p in enumerate(run.rois.proposals)])
    per_row = _soft_targets_loss(run.student_logits[uncertain_rows], run.teacher_logits)
    num_sampled = run.student.roi_heads.fg_bg_sampler.batch_size_per_image
    expected = per_row[image_of_row[uncertain_rows] == 1].sum() / (2 * num_sampled)
    assert run.losses["roi_soft"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_rplm_reads_the_boxs_class_score_and_its_clipped_refined_box_by_hand():
    """What `mine_reliable` hands the mining rule, computed by hand: one 100 x 80 (h x w) image,
    one uncertain box [10, 10, 50, 50] of class 2 (3 classes + background), two uncertain rows
    on it. Scores: logits [0, 0, ln 3, 0] -> p_2 = 3 / 6 = 0.5; [0, 0, ln 7, 0] -> 7 / 10 = 0.7.
    Boxes (BoxCoder weights 10, 10, 5, 5; the proposal is 40 wide): class 2's deltas are 0 on
    row 0 (the box itself) and dx = 10 on row 1 (1 width, +40 px: [50, 10, 90, 50], clipped to
    x <= 80); every other class has dx = -5, so reading another class's box or score shows.
    Mean IoU (1 + 0) / 2 = 0.5 < 0.8: nothing is promoted."""
    received = []

    class Recording(UnlabeledCriterion):
        def promoted_boxes(self, *args):
            received.append(args)
            return super().promoted_boxes(*args)

    teacher = SimpleNamespace(roi_heads=SimpleNamespace(box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0))))
    logits = torch.tensor([[0.0, 0.0, math.log(3), 0.0], [0.0, 0.0, math.log(7), 0.0]])
    regression = torch.zeros(2, 4, 4)  # [rows, background + 3 classes, (dx, dy, dw, dh)]
    regression[:, [0, 1, 3], 0] = -5.0
    regression[1, 2, 0] = 10.0
    proposals = torch.tensor([[10.0, 10.0, 50.0, 50.0]] * 2)
    view = TeacherOnUncertain(
        logits, regression.reshape(2, 16), [proposals], [torch.tensor([2, 2])],
        [torch.tensor([0, 0])],
    )  # fmt: skip
    pseudo = _pseudo(uncertain=[[10.0, 10.0, 50.0, 50.0]], uncertain_labels=[2])
    rows, mined = Recording().mine_reliable(teacher, view, [pseudo], [(100, 80)])
    ((boxes, labels, box_index, refined, scores),) = received
    assert labels.tolist() == [2] and box_index.tolist() == [0, 0]
    assert scores.tolist() == pytest.approx([0.5, 0.7])
    torch.testing.assert_close(
        refined, torch.tensor([[10.0, 10.0, 50.0, 50.0], [50.0, 10.0, 80.0, 50.0]])
    )
    assert rows.tolist() == [False, False] and mined == 0


def test_uncertain_proposals_reach_the_teacher_in_its_own_frame():
    """Strong view = 2x the weak view: the teacher's RoIAlign gets the student's uncertain
    proposals halved, on the teacher's weak-view features."""
    student, teacher = _detectors()
    weak = _images(64)
    strong = [F.interpolate(image[None], scale_factor=2.0, mode="bilinear")[0] for image in weak]
    pseudo_weak = [
        _pseudo([[5.0, 5.0, 20.0, 20.0]], [1], [[25.0, 25.0, 43.0, 40.0]], [2]),
        _pseudo([[28.0, 4.0, 45.0, 18.0]], [3], [[4.0, 22.0, 20.0, 44.0]], [3]),
    ]
    half = scale_matrix(0.5, 0.5)
    run = _run(student, teacher, weak, strong, pseudo_weak, [half, half], mining=_promote_none)

    start = 0
    for image, received in enumerate(run.teacher_pool_proposals):
        stop = start + len(run.rois.proposals[image])
        strong_uncertain = run.rois.proposals[image][run.rois.kind[start:stop] == UNC]
        assert len(strong_uncertain) > 0
        torch.testing.assert_close(received, strong_uncertain / 2)
        start = stop
    # RPLM compares with the weak-frame boxes (all images' in one call).
    ((mined_boxes, *_),) = run.mining_calls
    torch.testing.assert_close(mined_boxes, torch.cat([p.uncertain_boxes for p in pseudo_weak]))
    assert run.stats["reliable_per_image"] == 1.0 and run.stats["uncertain_per_image"] == 1.0
    assert all(torch.isfinite(loss) for loss in run.losses.values())


def test_rplm_enabled_in_the_config_promotes_rows_without_any_callback(plain_run):
    """`method.rplm.enabled` alone decides: at thresholds every sampled box passes (0, 0), RPLM
    on promotes both uncertain boxes and empties the soft loss; off, nothing is promoted."""
    off = _same_view_run(rplm=RPLMConfig(enabled=False, score=0.0, iou=0.0))
    on = _same_view_run(rplm=RPLMConfig(enabled=True, score=0.0, iou=0.0))
    assert torch.equal(on.rois.kind, off.rois.kind)
    assert off.mining_calls == [] and off.stats["mined_per_image"] == 0.0
    assert len(on.mining_calls) == 1 and on.stats["mined_per_image"] == 1.0
    assert off.losses["roi_soft"].item() > 0 and on.losses["roi_soft"].item() == 0.0
    for name in LOSS_NAMES:
        torch.testing.assert_close(off.losses[name], plain_run.losses[name])
    # The official 0.8 / 0.8 on an untrained teacher: its scores are far below, nothing is mined.
    official = _same_view_run(rplm=RPLMConfig())
    assert len(official.mining_calls) == 1 and official.stats["mined_per_image"] == 0.0


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["method.tpt=0.7", "method.tps=0.9", "method.uncertain=ignore"],
        ["method.rplm.enabled=false", "method.rplm.score=0.6", "method.uncertain_threshold=0.4"],
        ["method=mean_teacher"],
    ],
)
def test_hydra_builds_the_criterion_the_method_keys_describe(overrides) -> None:
    """`method.criterion` (Hydra `_target_`, conf/method/labelmatch.yaml) reads the keys users
    type, and gives the criterion `from_method_config` builds from the same keys."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    method = compose_config(overrides).method
    built = instantiate(method.criterion)
    assert isinstance(built, UnlabeledCriterion)
    expected = UnlabeledCriterion.from_method_config(OmegaConf.to_container(method, resolve=True))
    assert built.config == expected.config
    assert built.config.teacher_temperature == method.tpt
    assert built.config.rplm.enabled == method.rplm.enabled


def test_a_bad_criterion_key_fails_when_hydra_builds_it() -> None:
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    with pytest.raises(Exception, match="method.uncertain"):
        instantiate(compose_config(["method.uncertain=bogus"]).method.criterion)
