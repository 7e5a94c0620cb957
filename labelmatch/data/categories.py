"""Mapping between COCO category ids and the contiguous labels of a torchvision detector."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from labelmatch.data.errors import DataError, UnknownCategoryError


class CategoryMap:
    """COCO category ids <-> model labels 1..C (label 0 is torchvision's background).

    Categories are ordered by id, so COCO's ids 1..90 with gaps map to labels 1..80 in order.
    """

    def __init__(self, category_ids: Sequence[int], names: Sequence[str]) -> None:
        if len(category_ids) != len(names):
            raise ValueError(f"{len(category_ids)} category ids but {len(names)} names")
        if len(set(category_ids)) != len(category_ids):
            raise DataError(f"duplicate category ids in {list(category_ids)}")
        order = sorted(range(len(category_ids)), key=lambda i: category_ids[i])
        self.category_ids: list[int] = [int(category_ids[i]) for i in order]
        self.names: list[str] = [str(names[i]) for i in order]
        self._label_of_id = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        # Row `label` holds the category id; row 0 (background) is never a valid lookup.
        self._id_table = torch.tensor([-1, *self.category_ids], dtype=torch.int64)

    @classmethod
    def from_coco(cls, categories: list[dict]) -> CategoryMap:
        """Build from the `categories` list of a COCO json (dicts with `id` and `name`)."""
        for position, category in enumerate(categories):
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise DataError(f"category entry {position} needs 'id' and 'name': {category!r}")
        return cls([c["id"] for c in categories], [c["name"] for c in categories])

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes."""
        return len(self.category_ids)

    def to_label(self, category_id: int) -> int:
        """COCO category id -> model label in 1..C."""
        try:
            return self._label_of_id[int(category_id)]
        except KeyError:
            raise UnknownCategoryError(
                f"category id {category_id} is not in the category list "
                f"(known ids: {self.category_ids})"
            ) from None

    def to_category_id(self, label: int) -> int:
        """Model label in 1..C -> COCO category id."""
        if not 1 <= int(label) <= self.num_classes:
            raise UnknownCategoryError(
                f"label {label} is outside the model labels 1..{self.num_classes}"
            )
        return self.category_ids[int(label) - 1]

    def labels_to_category_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Vectorised `to_category_id`: int labels [...] in 1..C -> int64 category ids [...]."""
        labels = labels.long()
        if labels.numel() and (labels.min() < 1 or labels.max() > self.num_classes):
            raise UnknownCategoryError(
                f"labels must lie in 1..{self.num_classes}, got range "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return self._id_table.to(labels.device)[labels]

    def __repr__(self) -> str:
        return f"CategoryMap({dict(zip(self.category_ids, self.names))})"
