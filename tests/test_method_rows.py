"""Rows of many images in one tensor (labelmatch/method/rows.py), hand-computed."""

import pytest
import torch

from labelmatch.data.geometry import clip_boxes, map_boxes, scale_matrix
from labelmatch.method.rows import from_host, grouped_rows, segment_ids, segment_starts


def test_segment_ids_number_each_row_by_its_segment_and_skip_empty_segments():
    assert segment_ids([2, 0, 3, 1], torch.device("cpu")).tolist() == [0, 0, 2, 2, 2, 3]
    assert segment_ids([], torch.device("cpu")).tolist() == []


def test_grouped_rows_orders_by_key_keeping_each_groups_order():
    keys = torch.tensor([2, 0, 2, 1, 0, 2])
    order, sizes = grouped_rows(keys, num_groups=4)
    assert order.tolist() == [1, 4, 3, 0, 2, 5]  # key 0: rows 1, 4; key 1: row 3; key 2: 0, 2, 5
    assert sizes == [2, 1, 3, 0]  # key 3 has none
    values = torch.tensor([10, 11, 12, 13, 14, 15])
    groups = [g.tolist() for g in values[order].split(sizes)]
    assert groups == [[11, 14], [13], [10, 12, 15], []]


def test_grouped_rows_keeps_each_groups_order_among_many_rows():
    """Thousands of rows in few groups, where an unstable sort reorders equal keys."""
    keys = torch.randint(0, 3, (5000,), generator=torch.Generator().manual_seed(0))
    order, sizes = grouped_rows(keys, num_groups=3)
    assert sizes == torch.bincount(keys, minlength=3).tolist()
    for group, rows in enumerate(order.split(sizes)):
        assert torch.equal(rows, torch.nonzero(keys == group).squeeze(1))


def test_grouped_rows_of_nothing():
    order, sizes = grouped_rows(torch.zeros(0, dtype=torch.long), num_groups=2)
    assert order.tolist() == [] and sizes == [0, 0]


def test_from_host_keeps_values_and_dtype():
    values = from_host([(96, 128), (64, 80)], torch.float32, torch.device("cpu"))
    assert values.dtype == torch.float32 and values.tolist() == [[96.0, 128.0], [64.0, 80.0]]


def test_map_boxes_with_one_matrix_per_box():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0]])
    matrices = torch.stack([scale_matrix(2, 2), scale_matrix(0.5, 1)])
    assert map_boxes(boxes, matrices).tolist() == [[20, 40, 60, 80], [5, 20, 15, 40]]
    with pytest.raises(RuntimeError):  # one matrix per box: the counts must agree
        map_boxes(boxes, matrices[:1].expand(3, 3, 3))


def _boxes(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(count, 2, generator=generator) * 1000
    return torch.cat([corner, corner + 1 + torch.rand(count, 2, generator=generator) * 300], 1)


def test_map_boxes_gives_the_same_bits_per_box_as_with_one_matrix():
    """Also for a matrix with off-diagonal terms, where two matrix-product kernels may round
    differently."""
    boxes = _boxes(50)
    shear = torch.tensor([[0.9, 0.13, 7.5], [-0.21, 1.1, -3.25], [0.0, 0.0, 1.0]])
    assert torch.equal(map_boxes(boxes, shear), map_boxes(boxes, shear.expand(50, 3, 3)))


def test_map_boxes_keeps_the_boxes_precision_under_bf16_autocast():
    """Autocast runs matrix products in bf16 (8 significant bits: steps of 8 px near 1333 px);
    the boxes are mapped in their own dtype instead."""
    boxes = _boxes(50)
    matrix = scale_matrix(0.999, 1.001)
    expected = map_boxes(boxes, matrix)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mapped = map_boxes(boxes, matrix)
    assert mapped.dtype == torch.float32 and torch.equal(mapped, expected)


def test_segment_starts():
    assert segment_starts([2, 0, 3, 1]) == [0, 2, 2, 5] and segment_starts([]) == []


def test_clip_boxes_clips_each_box_to_its_own_image():
    boxes = torch.tensor([[-5.0, 2.0, 30.0, 50.0], [-5.0, 2.0, 30.0, 50.0]])
    sizes = torch.tensor([[40.0, 20.0], [10.0, 100.0]])  # (h, w)
    assert clip_boxes(boxes, sizes).tolist() == [[0, 2, 20, 40], [0, 2, 30, 10]]
    assert boxes[0, 0] == -5.0  # a new tensor: the boxes given are left as they were
