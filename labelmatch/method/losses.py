"""Soft classification loss of the proposal self-assignment (paper Eq. 7)."""

import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    normalizer: float,
    teacher_temperature: float = 0.5,
    student_temperature: float = 1.0,
) -> Tensor:
    """Σ_i w_i · Σ_c −p^t_ic · log p^s_ic / normalizer, a scalar (Eq. 7).

    student_logits, teacher_logits: [N, K] (K = classes + background) for the uncertain-group
    proposals; weights: [N] (official: 1 − mined, so mined proposals leave the soft loss).
    p^t = softmax(teacher / teacher_temperature), detached; p^s = softmax(student /
    student_temperature). Official: tpt = 0.5, tps = 1.0, normalizer = images in the batch ×
    512 sampled ROIs. With N = 0 the result is a zero still attached to `student_logits`, so
    DDP sees every parameter of the ROI head take part in the graph.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must be equal [N, K] shapes"
        )
    if weights.shape != student_logits.shape[:1]:
        raise ValueError(f"weights {tuple(weights.shape)} must be [{student_logits.shape[0]}]")
    if not normalizer > 0:
        raise ValueError(f"normalizer must be positive, got {normalizer}")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    targets = F.softmax(teacher_logits.detach() / teacher_temperature, dim=-1)
    log_probs = F.log_softmax(student_logits / student_temperature, dim=-1)
    per_proposal = -(targets * log_probs).sum(dim=-1)
    return (weights * per_proposal).sum() / normalizer
