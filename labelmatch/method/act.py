"""ACT: adaptive label-distribution-aware confidence thresholds (paper Eq. 4-6).

The labeled set fixes how many boxes of each class an image should hold (the class prior);
on a reference subset of R unlabeled images the teacher is expected to find
E_c = R · boxes_per_image · ratio_c boxes of class c, so the E_c-th best score of class c is
its uncertain threshold (Eq. 5) and the (α·E_c)-th best its reliable threshold (Eq. 6).
Classes are contiguous 1..C (0 is background); per-class tensors are indexed 0..C-1.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class ClassPrior:
    """Class distribution of the labeled boxes.

    class_ratios: float64[C], non-negative, sums to 1 (r_c^l of Eq. 4).
    boxes_per_image: foreground boxes per image (r_f^l of Eq. 4).
    """

    class_ratios: Tensor
    boxes_per_image: float

    def __post_init__(self) -> None:
        ratios = self.class_ratios
        if ratios.ndim != 1 or ratios.numel() == 0:
            raise ValueError(f"class_ratios must be non-empty and 1-D, got {tuple(ratios.shape)}")
        if (ratios < 0).any() or abs(ratios.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"class_ratios must be >= 0 and sum to 1, got {ratios.tolist()}")
        if not self.boxes_per_image > 0:
            raise ValueError(f"boxes_per_image must be positive, got {self.boxes_per_image}")

    @property
    def num_classes(self) -> int:
        return self.class_ratios.numel()

    @classmethod
    def from_manual(
        cls,
        class_ratios: Sequence[float] | Tensor,
        boxes_per_image: float,
        num_classes: int | None = None,
    ) -> "ClassPrior":
        """A prior given by hand (official `manual_prior`), for when the labeled and unlabeled
        distributions differ. Ratios are normalised to sum 1; with `num_classes` their count
        is checked against the detector's classes."""
        ratios = torch.as_tensor(class_ratios, dtype=torch.float64).flatten()
        if num_classes is not None and ratios.numel() != num_classes:
            raise ValueError(
                f"manual prior gives {ratios.numel()} class ratios for {num_classes} classes"
            )
        if (ratios < 0).any() or not ratios.sum() > 0:
            raise ValueError(f"manual class ratios must be >= 0, not all 0, got {ratios.tolist()}")
        return cls(ratios / ratios.sum(), float(boxes_per_image))

    def expected_boxes(self, num_images: int) -> Tensor:
        """E_c = num_images · boxes_per_image · ratio_c, float64[C] (official
        `potential_positive`)."""
        return num_images * self.boxes_per_image * self.class_ratios


def class_prior_from_counts(box_counts: Sequence[int] | Tensor, num_images: int) -> ClassPrior:
    """Prior from labeled box counts per class (index c-1 holds class c) over `num_images` images.

    A class without any labeled box counts as 1 (official rule), so it still gets a finite
    threshold instead of being silenced forever.
    """
    counts = torch.as_tensor(box_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0 or (counts < 0).any():
        raise ValueError(f"box counts must be non-empty and >= 0, got {counts.tolist()}")
    if num_images <= 0:
        raise ValueError(f"number of labeled images must be positive, got {num_images}")
    adjusted = counts.clamp(min=1.0)
    return ClassPrior(adjusted / adjusted.sum(), adjusted.sum().item() / num_images)


def scores_by_class(labels: Tensor, scores: Tensor, num_classes: int) -> list[Tensor]:
    """Splits detection scores by class.

    labels: int64[N] in 1..num_classes; scores: float[N]. Returns C tensors, entry c-1 holding
    the scores of class c.
    """
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(
            f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} must be 1-D, equal"
        )
    if labels.numel() and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"labels must lie in 1..{num_classes}, got range "
            f"{labels.min().item()}..{labels.max().item()}"
        )
    return [scores[labels == c] for c in range(1, num_classes + 1)]


def act_thresholds(
    scores_per_class: Sequence[Tensor],
    num_images: int,
    prior: ClassPrior,
    alpha: float = 0.2,
    min_threshold: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Per-class (reliable, uncertain) thresholds, each float32[C] on the CPU (Eq. 5-6).

    scores_per_class: C tensors of the teacher's post-NMS scores on `num_images` reference images.
    With s_c those scores sorted descending ([0.0] if none):
      reliable_c  = max(min_threshold, s_c[min(int(E_c · alpha), len(s_c) − 1)])
      uncertain_c = max(min_threshold, s_c[min(int(E_c), len(s_c) − 1)])
    alpha = 0 takes the top score; ranks past the end clamp to the lowest score (official code).
    Official defaults: alpha = 0.2 (the paper's α = 20 %), floor 0.05.
    """
    if len(scores_per_class) != prior.num_classes:
        raise ValueError(
            f"got scores for {len(scores_per_class)} classes, prior has {prior.num_classes}"
        )
    if num_images <= 0 or alpha < 0:
        raise ValueError(f"need num_images > 0 and alpha >= 0, got {num_images} and {alpha}")
    expected = prior.expected_boxes(num_images).tolist()
    reliable, uncertain = [], []
    for scores, expected_c in zip(scores_per_class, expected):
        ranked = scores.detach().flatten().float().cpu().sort(descending=True).values
        if ranked.numel() == 0:
            ranked = torch.zeros(1)
        last = ranked.numel() - 1
        reliable.append(ranked[min(int(expected_c * alpha), last)])
        uncertain.append(ranked[min(int(expected_c), last)])
    return (
        torch.stack(reliable).clamp(min=min_threshold),
        torch.stack(uncertain).clamp(min=min_threshold),
    )
