import pytest
import torch

from labelmatch.method.act import (
    ClassPrior,
    act_thresholds,
    class_prior_from_counts,
    scores_by_class,
)

# Class 1: 17 scores, class 2: two scores, class 3: none.
CLASS_1 = [
    0.95,
    0.9,
    0.85,
    0.8,
    0.7,
    0.6,
    0.5,
    0.4,
    0.3,
    0.2,
    0.1,
    0.09,
    0.08,
    0.07,
    0.06,
    0.04,
    0.03,
]
CLASS_2 = [0.3, 0.6]  # unsorted on purpose


def _scores() -> list[torch.Tensor]:
    order = torch.randperm(len(CLASS_1), generator=torch.Generator().manual_seed(0))
    return [torch.tensor(CLASS_1)[order], torch.tensor(CLASS_2), torch.zeros(0)]


def _prior() -> ClassPrior:
    # counts 6, 1, 0 -> adjusted 6, 1, 1 (absent class counts as 1): ratios 3/4, 1/8, 1/8;
    # 8 boxes over 4 labeled images -> 2 boxes per image.
    return class_prior_from_counts([6, 1, 0], num_images=4)


def test_class_prior_from_counts_applies_absent_class_rule():
    prior = _prior()
    assert prior.class_ratios.tolist() == [0.75, 0.125, 0.125]
    assert prior.boxes_per_image == 2.0
    # 10 reference images: E = 10 * 2 * ratios
    assert prior.expected_boxes(10).tolist() == [15.0, 2.5, 2.5]
    from_tensor = class_prior_from_counts(torch.tensor([6, 1, 0]), num_images=4)
    assert torch.equal(from_tensor.class_ratios, prior.class_ratios)


def test_class_prior_rejects_bad_counts():
    with pytest.raises(ValueError, match="box counts"):
        class_prior_from_counts([3, -1], num_images=2)
    with pytest.raises(ValueError, match="labeled images"):
        class_prior_from_counts([3, 1], num_images=0)


def test_manual_prior_normalises_and_validates():
    prior = ClassPrior.from_manual([3.0, 1.0], boxes_per_image=7.3, num_classes=2)
    assert prior.class_ratios.tolist() == [0.75, 0.25]
    assert prior.boxes_per_image == 7.3
    with pytest.raises(ValueError, match="3 class ratios for 2 classes"):
        ClassPrior.from_manual([0.5, 0.25, 0.25], boxes_per_image=1.0, num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        ClassPrior.from_manual([1.0, -0.5], boxes_per_image=1.0)
    with pytest.raises(ValueError, match="boxes_per_image"):
        ClassPrior.from_manual([1.0, 1.0], boxes_per_image=0.0)


def test_class_prior_state_dict_round_trip_is_a_copy():
    prior = ClassPrior.from_manual([3.0, 1.0], boxes_per_image=7.3)
    state = prior.state_dict()
    assert state == {"class_ratios": state["class_ratios"], "boxes_per_image": 7.3}
    state["class_ratios"][0] = 0.5  # the checkpoint's copy, not the prior's own tensor
    assert prior.class_ratios.tolist() == [0.75, 0.25]
    again = ClassPrior.from_state_dict(prior.state_dict())
    assert torch.equal(again.class_ratios, prior.class_ratios) and again.boxes_per_image == 7.3
    with pytest.raises(ValueError, match="sum to 1"):
        ClassPrior.from_state_dict(state)  # 0.5 + 0.25: a damaged checkpoint is refused


def test_total_variation_of_class_shares():
    # (3/4, 1/8, 1/8) against (1/4, 1/4, 1/2): ½ (1/2 + 1/8 + 3/8) = 1/2; boxes per image aside.
    other = ClassPrior.from_manual([1.0, 1.0, 2.0], boxes_per_image=9.0)
    assert _prior().total_variation(other) == pytest.approx(0.5)
    assert other.total_variation(_prior()) == pytest.approx(0.5)
    assert _prior().total_variation(_prior()) == 0.0
    # Half the L1 distance, not the largest difference: (0.4, 0.4, 0.1, 0.1) against (0.1, 0.1,
    # 0.4, 0.4) differ by 0.3 in every class: ½ (4 x 0.3) = 0.6, where the largest is 0.3.
    head = ClassPrior.from_manual([0.4, 0.4, 0.1, 0.1], boxes_per_image=1.0)
    tail = ClassPrior.from_manual([0.1, 0.1, 0.4, 0.4], boxes_per_image=1.0)
    assert head.total_variation(tail) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="3 and 2 classes"):
        _prior().total_variation(ClassPrior.from_manual([1.0, 1.0], boxes_per_image=1.0))


def test_thresholds_take_ranked_scores_floor_and_absent_class():
    reliable, uncertain = act_thresholds(_scores(), num_images=10, prior=_prior())
    # class 1: E = 15 -> reliable rank int(15 * 0.2) = 3 -> 0.8;
    #          uncertain rank 15 -> 0.04, floored to 0.05.
    # class 2: E = 2.5 -> reliable rank 0 -> 0.6; uncertain rank 2 clamps to the last (0.3).
    # class 3: no scores -> [0.0] -> floor 0.05 for both.
    assert reliable.tolist() == pytest.approx([0.8, 0.6, 0.05])
    assert uncertain.tolist() == pytest.approx([0.05, 0.3, 0.05])
    assert reliable.dtype == torch.float32 and reliable[0] == torch.tensor(0.8)


def test_a_fractional_expected_count_ranks_at_its_floor():
    # E = 1 image x 2.7 boxes x share 1 = 2.7: uncertain rank int(2.7) = 2 -> 0.7 (rounding up
    # would read rank 3, 0.6); reliable rank int(0.2 x 2.7) = 0 -> 0.9. Scores sorted: 0.9, 0.8,
    # 0.7, 0.6, 0.5, enough of them that no rank clamps.
    prior = ClassPrior.from_manual([1.0], boxes_per_image=2.7)
    reliable, uncertain = act_thresholds([torch.tensor([0.5, 0.9, 0.6, 0.8, 0.7])], 1, prior)
    assert reliable.tolist() == pytest.approx([0.9])
    assert uncertain.tolist() == pytest.approx([0.7])


def test_thresholds_alpha_zero_takes_top_score():
    reliable, _ = act_thresholds(_scores(), num_images=10, prior=_prior(), alpha=0.0)
    assert reliable.tolist() == pytest.approx([0.95, 0.6, 0.05])


def test_thresholds_alpha_above_one_clamps_at_end_of_list():
    # class 1: int(15 * 1.5) = 22 > 16 -> last score 0.03 -> floor; class 2: int(3.75) -> last.
    reliable, _ = act_thresholds(_scores(), num_images=10, prior=_prior(), alpha=1.5)
    assert reliable.tolist() == pytest.approx([0.05, 0.3, 0.05])


def test_thresholds_min_threshold_and_reference_size():
    # 20 reference images double E to 30, 5, 5: class 1 ranks 6 (0.5) and 30 (clamped: 0.03);
    # class 2 ranks 1 (0.3) and 5 (clamped: 0.3); the lower floor lets 0.03 through.
    reliable, uncertain = act_thresholds(
        _scores(), num_images=20, prior=_prior(), min_threshold=0.001
    )
    assert reliable.tolist() == pytest.approx([0.5, 0.3, 0.001])
    assert uncertain.tolist() == pytest.approx([0.03, 0.3, 0.001])


def test_thresholds_reject_wrong_class_count():
    with pytest.raises(ValueError, match="2 classes, prior has 3"):
        act_thresholds(_scores()[:2], num_images=10, prior=_prior())


def test_scores_by_class_gathers_each_class():
    labels = torch.tensor([2, 1, 2, 3, 2])
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    per_class = scores_by_class(labels, scores, num_classes=4)
    assert [s.tolist() for s in per_class] == [
        pytest.approx([0.2]),
        pytest.approx([0.1, 0.3, 0.5]),
        pytest.approx([0.4]),
        [],
    ]
    with pytest.raises(ValueError, match="1..4"):
        scores_by_class(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]), num_classes=4)
