"""RPLM: reliable pseudo-label mining (paper Sec. 3.3, docs/method.md §4).

An uncertain box is promoted to reliable when the teacher, refining the student proposals
assigned to it, agrees with it: mean IoU of the refined boxes with the box ≥ T_iou and mean
teacher score of the box's class ≥ T_score (both 0.8, paper Sec. 4.1). As in the official
code, the adjacent boxes are the student's sampled uncertain-group proposals after teacher
refinement, and the decision is made afresh at every step.
"""

import torch
from torch import Tensor
from torchvision.ops import box_iou


def mine_reliable(
    uncertain_boxes: Tensor,
    uncertain_labels: Tensor,
    proposal_box_index: Tensor,
    refined_boxes: Tensor,
    class_scores: Tensor,
    score_threshold: float = 0.8,
    iou_threshold: float = 0.8,
) -> Tensor:
    """Which uncertain boxes become reliable, bool[U].

    uncertain_boxes: [U, 4] in the teacher's frame; uncertain_labels: int64[U] in 1..C.
    proposal_box_index: int64[M], the uncertain box each uncertain-group proposal is assigned to.
    refined_boxes: [M, 4], the teacher's refined box of each proposal (same frame); any float
    dtype (bf16 / fp16 under autocast), computed on in float32.
    class_scores: [M], the teacher's softmax score of the assigned box's class, or [M, K] the
    teacher's full softmax (column 0 background), from which that class is gathered with
    `uncertain_labels`. Boxes without proposals are never promoted.
    """
    num_boxes, num_proposals = uncertain_boxes.shape[0], proposal_box_index.shape[0]
    if uncertain_labels.shape != (num_boxes,):
        raise ValueError(f"uncertain labels {tuple(uncertain_labels.shape)} must be [{num_boxes}]")
    if refined_boxes.shape != (num_proposals, 4) or class_scores.shape[0] != num_proposals:
        raise ValueError(
            f"refined boxes {tuple(refined_boxes.shape)} and class scores "
            f"{tuple(class_scores.shape)} must have M = {num_proposals} rows"
        )
    if num_proposals and (proposal_box_index.min() < 0 or proposal_box_index.max() >= num_boxes):
        raise ValueError(f"proposal_box_index must lie in 0..{num_boxes - 1}")
    if class_scores.ndim == 2:
        box_class = uncertain_labels[proposal_box_index]
        class_scores = class_scores.gather(1, box_class[:, None]).squeeze(1)

    # Means and comparisons in float32 whatever autocast gave the teacher's refinement: bf16
    # holds about 3 significant digits, too few to compare a mean with 0.8.
    refined_boxes, uncertain_boxes = refined_boxes.float(), uncertain_boxes.float()
    own_box_iou = box_iou(refined_boxes, uncertain_boxes).gather(1, proposal_box_index[:, None])
    counts = torch.bincount(proposal_box_index, minlength=num_boxes)
    denominator = counts.clamp(min=1).float()
    mean_iou = (
        refined_boxes.new_zeros(num_boxes).index_add_(0, proposal_box_index, own_box_iou.squeeze(1))
        / denominator
    )
    mean_score = (
        refined_boxes.new_zeros(num_boxes).index_add_(0, proposal_box_index, class_scores.float())
        / denominator
    )
    return (counts > 0) & (mean_iou >= iou_threshold) & (mean_score >= score_threshold)
