"""The detector's input transform when every resize happens in the data pipeline.

LabelMatch moves boxes between the teacher's weak view and the student's strong view with the
3x3 geometry matrix the data layer records for each view (docs/method.md §5). A second,
hidden resize inside the model (torchvision's ``GeneralizedRCNNTransform`` resizes to
``min_size``) would put the detector in a frame those matrices do not describe, so this
transform only normalises and pads: image sizes the model sees are the sizes the data pipeline
produced, and detections come back in that same frame.
"""

from collections.abc import Sequence

from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreResizedTransform(GeneralizedRCNNTransform):
    """Normalise and batch (pad to a multiple of ``size_divisible``), never resize.

    Input images: float ``[3, H, W]`` in [0, 1], already at their final size.
    ``postprocess`` returns boxes unchanged: ``image_sizes`` equal the original sizes.
    """

    def __init__(
        self,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        # min_size/max_size are unused because ``resize`` is the identity; 0 makes that visible.
        super().__init__(
            min_size=0,
            max_size=0,
            image_mean=list(image_mean),
            image_std=list(image_std),
            size_divisible=size_divisible,
        )

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        return result

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(Normalize(mean={self.image_mean}, std={self.image_std}), "
            f"no resize, pad to multiple of {self.size_divisible})"
        )
