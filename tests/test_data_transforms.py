"""View geometry: hand-computed matrices, agreement with torchvision, boxes that land on the
same objects in the weak and strong views, the resize rules, and the official strong
photometric draws (blur kernel, erasing fill and aspect ratio; docs/method.md §5)."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from labelmatch.data.geometry import flip_matrix, map_boxes, scale_matrix, weak_to_strong
from labelmatch.data.transforms import (
    BLUR_KERNEL_DRAWS,
    LabeledTransform,
    LongSideRatio,
    RandomKernelGaussianBlur,
    ShortSideChoice,
    ShortSideRange,
    TestTransform,
    UniformRandomErasing,
    UnlabeledViews,
    photometric_jitter,
    resize_rule,
    resized_size,
)

BOX = [10.0, 20.0, 30.0, 40.0]
SHORT_40_50 = ShortSideChoice([40, 50], 200)


def test_flip_and_scale_matrices_by_hand():
    boxes = torch.tensor([BOX])
    assert map_boxes(boxes, flip_matrix(100)).tolist() == [[70, 20, 90, 40]]
    assert map_boxes(boxes, scale_matrix(2, 0.5)).tolist() == [[20, 10, 60, 20]]
    # Flip first, then scale: [70, 20, 90, 40] -> [140, 10, 180, 20].
    assert map_boxes(boxes, scale_matrix(2, 0.5) @ flip_matrix(100)).tolist() == [
        [140, 10, 180, 20]
    ]
    assert map_boxes(torch.zeros(0, 4), flip_matrix(5)).shape == (0, 4)


def test_weak_to_strong_by_hand():
    weak = scale_matrix(0.5, 0.5) @ flip_matrix(100)
    strong = scale_matrix(2, 2) @ flip_matrix(100)
    # The shared flip cancels: weak -> strong is a pure 4x scale.
    assert torch.allclose(weak_to_strong(weak, strong), scale_matrix(4, 4))
    unflipped_strong = scale_matrix(3, 3)
    weak_box = map_boxes(torch.tensor([BOX]), weak)  # [35, 10, 45, 20]: flipped, halved
    assert map_boxes(weak_box, weak_to_strong(weak, unflipped_strong)).tolist() == [
        [30, 60, 90, 120]
    ]


def test_map_boxes_agrees_with_torchvision_box_transforms():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=generator) * torch.tensor([80.0, 50.0])
    wh = torch.rand(50, 2, generator=generator) * 10 + 0.5
    boxes = tv_tensors.BoundingBoxes(
        torch.cat([xy, xy + wh], 1), format="XYXY", canvas_size=(60, 90)
    )
    expected = F.resize(F.horizontal_flip(boxes), [37, 55])
    matrix = scale_matrix(55 / 90, 37 / 60) @ flip_matrix(90)
    assert torch.allclose(map_boxes(boxes.as_subclass(torch.Tensor), matrix), expected, atol=1e-4)


def test_resized_size_keeps_ratio_and_caps_the_long_side():
    assert resized_size(480, 640, 800, 1333) == (800, 1067)
    assert resized_size(640, 480, 800, 1333) == (1067, 800)
    assert resized_size(100, 400, 800, 1333) == (333, 1333)  # long side capped
    assert resized_size(64, 64, 80, 100) == (80, 80)


def _scene() -> tuple[tv_tensors.Image, dict]:
    """White 60x90 (h x w) image with one black object at x 20..40, y 10..30."""
    image = torch.full((3, 60, 90), 255, dtype=torch.uint8)
    image[:, 10:30, 20:40] = 0
    boxes = torch.tensor([[20.0, 10.0, 40.0, 30.0]])
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(60, 90)),
        "labels": torch.tensor([4]),
        "image_id": 17,
    }
    return tv_tensors.Image(image), target


def _object_box(view: torch.Tensor) -> torch.Tensor:
    """XYXY extent of the dark pixels of a float view [3, H, W]."""
    dark = view.mean(0) < 0.5
    rows, cols = dark.any(1).nonzero().flatten(), dark.any(0).nonzero().flatten()
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_labeled_boxes_sit_on_the_object_in_the_view(flip_prob):
    image, target = _scene()
    transform = LabeledTransform(ShortSideChoice([40, 50, 70], 200), flip_prob, photometric=False)
    for seed in range(6):
        torch.manual_seed(seed)
        view, out = transform(image, target)
        assert view.dtype == torch.float32 and 0 <= view.min() and view.max() <= 1
        assert min(view.shape[1:]) in (40, 50, 70) and view.shape[0] == 3
        assert (out["matrix"][0, 0] < 0) == (flip_prob == 1.0)
        assert type(out["boxes"]) is torch.Tensor
        assert torch.allclose(out["boxes"][0], _object_box(view), atol=1.0)
        assert out["labels"].tolist() == [4] and out["image_id"] == 17
        assert out["orig_size"] == (60, 90)


def test_labeled_photometric_jitter_changes_pixels_not_geometry():
    image, target = _scene()
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        plain, plain_target = LabeledTransform(SHORT_40_50, photometric=False)(image, target)
        torch.manual_seed(seed)
        jittered, jittered_target = LabeledTransform(SHORT_40_50)(image, target)
        assert torch.equal(plain_target["matrix"], jittered_target["matrix"])
        assert torch.equal(plain_target["boxes"], jittered_target["boxes"])
        assert 0 <= jittered.min() and jittered.max() <= 1
        changed += not torch.allclose(plain, jittered)
    assert changed >= 4  # the jitter is a no-op with probability 0.2 x 0.8 x 0.5 = 0.08


def test_a_grey_view_without_later_ops_leaves_the_pipeline_clamped():
    # RandomGrayscale's output is one channel expanded to three; nothing after it may copy it.
    image, target = _scene()
    transform = LabeledTransform(ShortSideChoice([40], 200))
    transform.jitter = v2.RandomGrayscale(p=1.0)
    view, _ = transform(image, target)
    assert 0 <= view.min() and view.max() <= 1
    assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_weak_boxes_mapped_to_the_strong_view_land_on_the_same_object(flip_prob):
    image, target = _scene()
    views = UnlabeledViews(SHORT_40_50, ShortSideChoice([70, 80, 90], 200), flip_prob)
    views.strong_jitter = v2.Identity()  # keep the object visible to locate it
    truth = target["boxes"].as_subclass(torch.Tensor)
    for seed in range(6):
        torch.manual_seed(seed)
        out = views(image, target)
        weak_box = map_boxes(truth, out["weak_matrix"])
        assert torch.allclose(weak_box[0], _object_box(out["weak"]), atol=1.0)
        # What the method does: weak-frame (teacher) boxes -> strong frame (student).
        strong_box = map_boxes(weak_box, weak_to_strong(out["weak_matrix"], out["strong_matrix"]))
        assert torch.allclose(strong_box, map_boxes(truth, out["strong_matrix"]), atol=1e-3)
        assert torch.allclose(strong_box[0], _object_box(out["strong"]), atol=1.0)
        assert min(out["weak"].shape[1:]) in (40, 50)
        assert min(out["strong"].shape[1:]) in (70, 80, 90)
        assert torch.equal(out["target"]["boxes"], truth)  # ground truth stays in the original
        assert torch.equal(out["target"]["weak_boxes"], weak_box)  # and travels in the weak frame
        assert out["target"]["labels"].tolist() == [4] and out["image_id"] == 17


def test_unlabeled_views_share_one_flip():
    image, target = _scene()
    views = UnlabeledViews(ShortSideChoice([40], 200), ShortSideChoice([60], 200), flip_prob=0.5)
    flips = []
    for seed in range(20):
        torch.manual_seed(seed)
        out = views(image, target)
        flips.append(bool(out["weak_matrix"][0, 0] < 0))
        assert flips[-1] == bool(out["strong_matrix"][0, 0] < 0)
    assert 0 < sum(flips) < 20


def test_strong_view_is_photometrically_augmented_within_range():
    image, target = _scene()
    views = UnlabeledViews(ShortSideChoice([60], 200), ShortSideChoice([60], 200), flip_prob=0.0)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out = views(image, target)
        assert out["strong"].dtype == torch.float32
        assert 0 <= out["strong"].min() and out["strong"].max() <= 1
        assert torch.equal(out["weak_matrix"], out["strong_matrix"])
        changed += not torch.allclose(out["weak"], out["strong"])
    assert changed >= 9  # identity only with probability ~0.008


def test_test_transform_is_deterministic_and_unflipped():
    image, target = _scene()
    transform = TestTransform(scale=30, max_size=200)
    first_view, first = transform(image, target)
    second_view, second = transform(image, target)
    assert torch.equal(first_view, second_view) and torch.equal(first["boxes"], second["boxes"])
    assert first_view.shape == (3, 30, 45)
    assert torch.allclose(first["matrix"], scale_matrix(0.5, 0.5))
    assert first["boxes"].tolist() == [[10, 5, 20, 15]]
    assert first["orig_size"] == (60, 90)


def test_unlabeled_image_without_annotations_has_empty_ground_truth_in_both_frames():
    image, target = _scene()
    target["boxes"] = tv_tensors.BoundingBoxes(
        torch.zeros(0, 4), format="XYXY", canvas_size=(60, 90)
    )
    target["labels"] = torch.zeros(0, dtype=torch.int64)
    out = UnlabeledViews(SHORT_40_50, ShortSideChoice([70, 80], 200))(image, target)
    assert out["target"]["boxes"].shape == out["target"]["weak_boxes"].shape == (0, 4)


def test_every_view_leaves_the_pipeline_in_the_unit_range_whatever_the_photometric_ops_do():
    """The [0, 1] bound is enforced once, where the pipeline ends: a photometric stage that
    overshoots (here on purpose, far more than a CPU's float kernels ever do) cannot leak
    values outside it into the labeled or strong views."""
    image, target = _scene()

    def overshoot(view: torch.Tensor) -> torch.Tensor:
        return view * 3.0 - 1.0  # maps [0, 1] onto [-1, 2]

    labeled = LabeledTransform(ShortSideChoice([40], 200))
    labeled.jitter = overshoot
    views = UnlabeledViews(ShortSideChoice([40], 200), ShortSideChoice([50], 200))
    views.strong_jitter = overshoot
    torch.manual_seed(0)
    emitted = [
        labeled(image, target)[0],
        *(views(image, target)[key] for key in ("weak", "strong")),
        TestTransform(40, 200)(image, target)[0],
    ]
    for view in emitted:
        assert view.dtype == torch.float32
        assert view.min() >= 0.0 and view.max() <= 1.0
    # The overshoot really happened: the clamp, not the data, bounds the labeled view.
    assert (emitted[0] == 0.0).any() and (emitted[0] == 1.0).any()


# ---- resize rules ---------------------------------------------------------------------------

# (labeled view size, labeled flipped, weak size, strong size, unlabeled flipped) for seeds 0-5
# of a 100 x 130 image with the digits' scales, recorded from the list-based transforms before
# the resize rules existed (commit b12d1ad): the digits' geometry draws must stay bit-identical.
DIGITS_GEOMETRY_BEFORE_RULES = [
    ((160, 208), True, (112, 146), (144, 187), True),
    ((160, 208), False, (144, 187), (160, 208), False),
    ((128, 166), False, (112, 146), (112, 146), False),
    ((144, 187), True, (144, 187), (128, 166), True),
    ((160, 208), False, (112, 146), (112, 146), False),
    ((160, 208), False, (112, 146), (128, 166), False),
]


def test_digits_scales_draw_the_same_views_as_before_the_resize_rules():
    image = tv_tensors.Image(torch.full((3, 100, 130), 200, dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[10.0, 20.0, 50.0, 60.0]]), format="XYXY", canvas_size=(100, 130)
        ),
        "labels": torch.tensor([1]),
        "image_id": 3,
    }
    # conf/data/digits.yaml: train/strong [96, ..., 160], weak [112, 128, 144], max_size 256.
    scales = resize_rule([96, 112, 128, 144, 160], 256)
    labeled = LabeledTransform(scales)
    views = UnlabeledViews(resize_rule([112, 128, 144], 256), scales)
    for seed, expected in enumerate(DIGITS_GEOMETRY_BEFORE_RULES):
        torch.manual_seed(seed)
        view, out = labeled(image, target)
        torch.manual_seed(seed)
        unlabeled = views(image, target)
        got = (
            tuple(view.shape[1:]),
            bool(out["matrix"][0, 0] < 0),
            tuple(unlabeled["weak"].shape[1:]),
            tuple(unlabeled["strong"].shape[1:]),
            bool(unlabeled["weak_matrix"][0, 0] < 0),
        )
        assert got == expected, seed


def test_resize_rule_takes_a_rule_as_it_is_and_a_list_as_short_sides():
    rule = LongSideRatio(1024, (0.5, 1.5))
    assert resize_rule(rule, 1333) is rule
    assert resize_rule([96, 128], 256) == ShortSideChoice((96, 128), 256)
    assert resize_rule(96, 256) == ShortSideChoice((96,), 256)  # one short side, as a number
    with pytest.raises(ValueError):
        ShortSideChoice([], 256)


def _draws(rule, height: int, width: int, count: int = 3000) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.tensor([rule.draw(height, width) for _ in range(count)])


def test_short_side_range_draws_every_integer_short_side_within_the_long_side_cap():
    sizes = _draws(ShortSideRange(500, 800, 1333), 480, 640)  # COCO's usual 4:3
    short, long = sizes.min(1).values, sizes.max(1).values
    assert short.min() == 500 and short.max() == 800  # both ends reachable
    assert len(short.unique()) > 250  # integers across the range, not a few fixed scales
    assert abs(short.float().mean().item() - 650) < 10  # uniform
    assert torch.allclose(long / short, torch.tensor(640 / 480), atol=0.01)
    # A panorama hits the long-side cap instead: 1333 wide, short side below the draw.
    assert (_draws(ShortSideRange(500, 800, 1333), 200, 1000, 50)[:, 1] == 1333).all()


@pytest.mark.parametrize("ratio_range", [(0.2, 1.8), (0.5, 1.5)])
def test_long_side_ratio_draws_the_long_side_as_1024_times_a_uniform_ratio(ratio_range):
    low, high = ratio_range
    sizes = _draws(LongSideRatio(1024, ratio_range), 480, 640)
    long = sizes.max(1).values.float()
    assert int(1024 * low) <= long.min() and long.max() <= int(1024 * high)
    assert long.min() < 1024 * low + 15 and long.max() > 1024 * high - 15
    assert abs(long.mean().item() - 1024 * (low + high) / 2) < 15  # uniform in r
    assert (sizes[:, 1] >= sizes[:, 0]).all()  # the width stays the long side
    assert torch.allclose(sizes[:, 0] / sizes[:, 1], torch.tensor(0.75), atol=0.01)
    # No short-side or 1333 cap: the official rule lets a 1.8 draw reach 1843 px.
    torch.manual_seed(0)
    assert LongSideRatio(1000, (1.5, 1.5)).draw(300, 400) == (1125, 1500)


# ---- the official strong photometric draws --------------------------------------------------


def test_blur_kernel_is_3_5_or_7_as_albumentations_draws_it():
    blur = RandomKernelGaussianBlur(BLUR_KERNEL_DRAWS, sigma=(0.1, 2.0))
    image = torch.zeros(1, 21, 21)
    torch.manual_seed(0)
    params = [blur.make_params([image]) for _ in range(5000)]
    sizes = torch.tensor([p["kernel_size"][0] for p in params])
    for size, share in ((3, 0.2), (5, 0.4), (7, 0.4)):
        assert abs((sizes == size).float().mean().item() - share) < 0.03, size
    sigmas = torch.tensor([p["sigma"][0] for p in params])
    assert 0.1 <= sigmas.min() and sigmas.max() <= 2.0
    # The drawn size is the kernel applied: an impulse spreads over exactly k x k pixels.
    image[0, 10, 10] = 1.0
    for size in (3, 7):
        blurred = blur.transform(image, dict(kernel_size=[size, size], sigma=[2.0, 2.0]))
        rows, cols = (blurred[0] > 0).nonzero().unbind(1)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (size, size)


def test_a_view_thinner_than_the_kernel_is_blurred_with_the_largest_kernel_that_fits():
    """A very elongated image gives views of 1-3 px across, narrower than a 7 px kernel's reflect
    padding allows (torchvision raised there; OpenCV, the official blur, reflects as often as
    needed). Along such a side the kernel drawn is cut to the largest odd size that fits,
    2 * side - 1; along the other side it keeps the drawn size (kernel_size is (x, y))."""
    blur = RandomKernelGaussianBlur(BLUR_KERNEL_DRAWS, sigma=(0.1, 2.0))
    torch.manual_seed(0)
    for side, largest in ((1, 1), (2, 3), (3, 5), (4, 7), (50, 7)):
        for image, thin in ((torch.rand(3, side, 50), 1), (torch.rand(3, 50, side), 0)):
            sizes = [blur.make_params([image])["kernel_size"] for _ in range(200)]
            assert max(size[thin] for size in sizes) == largest, (side, sizes)
            assert max(size[1 - thin] for size in sizes) == 7  # the long side: as drawn
    image = torch.rand(3, 1, 50)
    params = blur.make_params([image])
    # 1 px high: no blur along y; along x the row is blurred as drawn
    expected = F.gaussian_blur(image, [params["kernel_size"][0], 1], params["sigma"])
    assert torch.equal(blur.transform(image, params), expected)
    assert params["kernel_size"][1] == 1
    # the whole strong pipeline on such views, every op drawn
    strong = photometric_jitter(erase=True)
    for side in (1, 2, 3):
        for seed in range(30):
            torch.manual_seed(seed)
            assert strong(torch.rand(3, side, 80)).shape == (3, side, 80)


def test_erasing_fills_with_uniform_8_bit_levels_not_gaussian_noise():
    erasing = UniformRandomErasing(p=1.0, scale=(0.05, 0.2), ratio=(0.3, 3.3))
    image = torch.full((3, 64, 80), 2.0)  # outside [0, 1]: every erased pixel shows
    torch.manual_seed(0)
    fills = torch.cat([(out := erasing(image))[out != 2.0] for _ in range(200)])
    assert len(fills) > 100_000
    assert 0 <= fills.min() and fills.max() <= 1
    assert torch.allclose(fills * 255, (fills * 255).round(), atol=1e-4)  # k / 255 levels
    # Uniform: each quarter of [0, 1] holds a quarter (N(0, 1) clamped puts half on 0).
    quarters = torch.histc(fills, bins=4, min=0, max=1) / len(fills)
    assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.01), quarters
    assert (fills == 0).float().mean() < 0.01


def test_erasing_aspect_ratio_is_uniform_not_log_uniform():
    # The third official pass, ratio (0.05, 8): uniform puts 12 % of the draws below 1 and the
    # median at 4; torchvision's log-uniform puts 59 % below 1 and the median at 0.63.
    erasing = UniformRandomErasing(p=1.0, scale=(0.02, 0.02), ratio=(0.05, 8.0))
    image = torch.zeros(1, 1000, 1000)
    torch.manual_seed(0)
    params = [erasing.make_params([image]) for _ in range(4000)]
    ratios = torch.tensor([p["h"] / p["w"] for p in params])
    assert abs((ratios < 1).float().mean().item() - 0.95 / 7.95) < 0.03
    assert abs(ratios.median().item() - 4.0) < 0.3
    assert all(p["h"] * p["w"] == pytest.approx(20_000, rel=0.05) for p in params)


def test_erasing_leaves_the_image_alone_when_no_rectangle_fits():
    erasing = UniformRandomErasing(p=1.0, scale=(0.9, 0.9), ratio=(8.0, 8.0))  # always too tall
    image = torch.rand(3, 20, 20)
    torch.manual_seed(0)
    assert erasing.make_params([image])["v"] is None
    assert torch.equal(erasing(image), image)
