import math

import pytest
import torch

from labelmatch.method.losses import soft_cross_entropy

LN3 = math.log(3.0)


def test_soft_cross_entropy_matches_hand_computed_values():
    # Row 0: teacher [ln3 / 2, 0] / 0.5 -> softmax [3/4, 1/4]; student [0, 0] -> [1/2, 1/2]:
    #        loss = -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2.
    # Row 1: teacher [0, 0] -> [1/2, 1/2]; student [ln3, 0] -> [3/4, 1/4]:
    #        loss = -(1/2 ln 3/4 + 1/2 ln 1/4) = -1/2 ln(3/16).
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    teacher = torch.tensor([[LN3 / 2, 0.0], [0.0, 0.0]])
    weights = torch.tensor([1.0, 0.5])
    loss = soft_cross_entropy(student, teacher, weights, normalizer=4.0)
    expected = (math.log(2.0) + 0.5 * (-0.5 * math.log(3.0 / 16.0))) / 4.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_student_temperature_divides_student_logits():
    # student [2 ln3, 0] / 2 -> [3/4, 1/4]; teacher [0, 0] -> [1/2, 1/2].
    loss = soft_cross_entropy(
        torch.tensor([[2 * LN3, 0.0]]),
        torch.zeros(1, 2),
        torch.ones(1),
        normalizer=1.0,
        student_temperature=2.0,
    )
    assert loss.item() == pytest.approx(-0.5 * math.log(3.0 / 16.0), rel=1e-6)


def test_zero_weight_removes_a_proposal():
    student = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    teacher = torch.tensor([[LN3 / 2, 0.0], [-9.0, 9.0]])
    loss = soft_cross_entropy(student, teacher, torch.tensor([1.0, 0.0]), normalizer=1.0)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_gradient_reaches_the_student_only():
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[LN3 / 2, 0.0]], requires_grad=True)
    soft_cross_entropy(student, teacher, torch.ones(1), normalizer=4.0).backward()
    # d loss / d student = (p_s - p_t) / normalizer = ([1/2, 1/2] - [3/4, 1/4]) / 4
    torch.testing.assert_close(student.grad, torch.tensor([[-0.0625, 0.0625]]))
    assert teacher.grad is None


def test_no_proposals_gives_a_zero_attached_to_the_student():
    student = torch.zeros(0, 3, requires_grad=True)
    loss = soft_cross_entropy(student, torch.zeros(0, 3), torch.zeros(0), normalizer=512.0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert student.grad is not None and student.grad.shape == (0, 3)


def test_rejects_mismatched_shapes_and_bad_normalizer():
    with pytest.raises(ValueError, match="logits"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="weights"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="normalizer"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), 0.0)
