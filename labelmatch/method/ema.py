"""Mean-teacher weight averaging (paper Sec. 3.2; official `update_ema_model`, m = 0.996)."""

import torch
from torch import Tensor, nn


def _matching_state(teacher: nn.Module, student: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Pairs (teacher tensor, student tensor) by state-dict name; raises on any mismatch.

    A tensor the state dict lists under several names (tied weights) is paired once: averaged
    twice it would become m²·θ_t + 2(1 − m)·θ_s.
    """
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    if teacher_state.keys() != student_state.keys():
        only_teacher = sorted(teacher_state.keys() - student_state.keys())
        only_student = sorted(student_state.keys() - teacher_state.keys())
        raise ValueError(
            f"teacher and student state dicts differ: only in teacher {only_teacher[:5]}, "
            f"only in student {only_student[:5]}"
        )
    pairs, seen = [], set()
    for name, teacher_tensor in teacher_state.items():
        student_tensor = student_state[name]
        storage = (teacher_tensor.data_ptr(), teacher_tensor.dtype, teacher_tensor.shape)
        if storage in seen:
            continue
        seen.add(storage)
        if teacher_tensor.shape != student_tensor.shape:
            raise ValueError(
                f"state '{name}': teacher shape {tuple(teacher_tensor.shape)} != "
                f"student shape {tuple(student_tensor.shape)}"
            )
        pairs.append((teacher_tensor, student_tensor))
    return pairs


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m·θ_t + (1 − m)·θ_s, in place, over the whole state dict.

    Parameters and floating-point buffers (BatchNorm running statistics) are averaged, as the
    official code averages the full state dict. Integer buffers (`num_batches_tracked`) are
    copied from the student: a step counter has no meaningful average.
    `state_dict()` tensors share storage with the module, so in-place updates reach the teacher
    whether or not its parameters require grad.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    averaged: tuple[list[Tensor], list[Tensor]] = ([], [])
    for teacher_tensor, student_tensor in _matching_state(teacher, student):
        if teacher_tensor.is_floating_point():
            averaged[0].append(teacher_tensor)
            averaged[1].append(student_tensor.to(teacher_tensor.dtype))
        else:
            teacher_tensor.copy_(student_tensor)
    # One multiply and one add over all tensors (torch.optim's foreach kernels: a few launches
    # on a GPU instead of two per tensor), the same two operations tensor by tensor.
    if averaged[0]:
        torch._foreach_mul_(averaged[0], momentum)
        torch._foreach_add_(averaged[0], averaged[1], alpha=1.0 - momentum)


@torch.no_grad()
def copy_weights(teacher: nn.Module, student: nn.Module) -> None:
    """teacher := student (the burn-in switch); the teacher keeps its own storage."""
    for teacher_tensor, student_tensor in _matching_state(teacher, student):
        teacher_tensor.copy_(student_tensor)
