import pytest
import torch
from torch import nn

from labelmatch.method.ema import copy_weights, ema_update


def _tiny(weight: float, bias: float, running_mean: float, batches: int) -> nn.Sequential:
    module = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        module[0].weight.fill_(weight)
        module[0].bias.fill_(bias)
        module[1].running_mean.fill_(running_mean)
        module[1].num_batches_tracked.fill_(batches)
    return module


def test_ema_averages_parameters_and_float_buffers_with_hand_numbers():
    teacher = _tiny(weight=1.0, bias=0.0, running_mean=0.0, batches=0)
    student = _tiny(weight=3.0, bias=4.0, running_mean=2.0, batches=7)
    ema_update(teacher, student, momentum=0.75)
    # 0.75 * t + 0.25 * s
    assert teacher[0].weight.item() == pytest.approx(1.5)
    assert teacher[0].bias.item() == pytest.approx(1.0)
    assert teacher[1].running_mean.item() == pytest.approx(0.5)
    assert teacher[1].running_var.item() == pytest.approx(1.0)  # both 1: unchanged
    # a second step compounds: 0.75 * 1.5 + 0.25 * 3 = 1.875
    ema_update(teacher, student, momentum=0.75)
    assert teacher[0].weight.item() == pytest.approx(1.875)


def test_ema_copies_integer_buffers_instead_of_averaging():
    teacher = _tiny(1.0, 0.0, 0.0, batches=0)
    student = _tiny(3.0, 4.0, 2.0, batches=7)
    ema_update(teacher, student, momentum=0.996)
    assert teacher[1].num_batches_tracked.dtype == torch.long
    assert teacher[1].num_batches_tracked.item() == 7


def test_ema_leaves_student_untouched_and_works_on_frozen_teacher():
    teacher = _tiny(1.0, 0.0, 0.0, 0)
    teacher.requires_grad_(False)
    student = _tiny(3.0, 4.0, 2.0, 7)
    ema_update(teacher, student, momentum=0.5)
    assert teacher[0].weight.item() == pytest.approx(2.0)
    assert not teacher[0].weight.requires_grad
    assert student[0].weight.item() == 3.0 and student[1].running_mean.item() == 2.0


def test_ema_momentum_extremes():
    teacher, student = _tiny(1.0, 0.0, 0.0, 0), _tiny(3.0, 4.0, 2.0, 7)
    ema_update(teacher, student, momentum=1.0)
    assert teacher[0].weight.item() == 1.0
    ema_update(teacher, student, momentum=0.0)
    assert teacher[0].weight.item() == 3.0 and teacher[0].bias.item() == 4.0


def test_ema_rejects_bad_momentum_and_mismatched_modules():
    teacher, student = _tiny(1.0, 0.0, 0.0, 0), _tiny(3.0, 4.0, 2.0, 7)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, momentum=1.5)
    with pytest.raises(ValueError, match="only in teacher"):
        ema_update(teacher, nn.Sequential(nn.Linear(1, 1)), momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 1), nn.Linear(3, 1), momentum=0.9)


def test_copy_weights_makes_teacher_equal_with_its_own_storage():
    teacher, student = _tiny(1.0, 0.0, 0.0, 0), _tiny(3.0, 4.0, 2.0, 7)
    copy_weights(teacher, student)
    for (name, t), s in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(t, s), name
    with torch.no_grad():
        student[0].weight.fill_(9.0)
    assert teacher[0].weight.item() == 3.0


def test_ema_averages_a_tied_weight_once():
    def tied(weight: float) -> nn.Sequential:
        module = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
        module[1].weight = module[0].weight  # one tensor, two state-dict names
        with torch.no_grad():
            module[0].weight.fill_(weight)
        return module

    teacher, student = tied(1.0), tied(3.0)
    assert len(teacher.state_dict()) == 2
    ema_update(teacher, student, momentum=0.75)
    # 0.75 * 1 + 0.25 * 3 = 1.5; averaged once per name it would be 0.5625 + 2 * 0.75 = 2.0625
    assert teacher[0].weight.item() == pytest.approx(1.5)
    assert teacher[1].weight is teacher[0].weight
