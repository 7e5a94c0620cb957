"""The class prior of a split (paper Eq. 4): the share of each class among its boxes and its boxes
per image. ACT aims at the labeled split's (`labelmatch.method.act`), the pseudo-label statistics
compare with it; `DetectionDataModule.labeled_class_prior` computes it once per run."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of it: {"class_ratios": float64[C] (a copy),
        "boxes_per_image": float}."""
        return {"class_ratios": self.class_ratios.clone(), "boxes_per_image": self.boxes_per_image}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "ClassPrior":
        """The prior `state_dict` kept."""
        return cls(state["class_ratios"], state["boxes_per_image"])

    def expected_boxes(self, num_images: int) -> Tensor:
        """E_c = num_images · boxes_per_image · ratio_c, float64[C] (official
        `potential_positive`)."""
        return num_images * self.boxes_per_image * self.class_ratios

    def total_variation(self, other: "ClassPrior") -> float:
        """½ Σ_c |r_c − r'_c| of the class shares, in [0, 1] (boxes per image aside): how far
        the prior ACT aims at is from another, e.g. the unlabeled ground truth (issue #17)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"priors over {self.num_classes} and {other.num_classes} classes")
        return 0.5 * (self.class_ratios - other.class_ratios).abs().sum().item()


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
