"""Online ACT (the official labelmatch_online variant): per-image top scores in a bounded queue,
Eq. 5-6 on the queue; the same thresholds as the offline refresh on the same scores."""

from __future__ import annotations

import io

import pytest
import torch

from labelmatch.callbacks.act_refresh import ACTRefresh
from labelmatch.method.act import (
    QUEUE_PADDING,
    ScoreQueue,
    act_thresholds,
    class_prior_from_counts,
    online_act_thresholds,
    scores_by_class,
    top_scores_per_class,
    top_scores_per_image,
)

NUM_CLASSES, TOP_K = 3, 4


def random_detections(num_images: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(labels, scores) per image, at most TOP_K detections of a class per image."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(num_images):
        per_class = torch.randint(0, TOP_K + 1, (NUM_CLASSES,), generator=generator)
        labels = torch.repeat_interleave(torch.arange(1, NUM_CLASSES + 1), per_class)
        scores = torch.rand(len(labels), generator=generator)
        images.append((labels, scores))
    return images


def filled_queue(images, capacity: int = 1000) -> ScoreQueue:
    queue = ScoreQueue(capacity, NUM_CLASSES, TOP_K)
    queue.push(torch.stack([top_scores_per_class(lab, s, NUM_CLASSES, TOP_K) for lab, s in images]))
    return queue


def test_top_scores_per_class_sorts_each_class_and_pads() -> None:
    labels = torch.tensor([2, 1, 2, 2, 2, 2])
    scores = torch.tensor([0.3, 0.9, 0.8, 0.1, 0.5, 0.6])
    top = top_scores_per_class(labels, scores, NUM_CLASSES, TOP_K)
    pad = QUEUE_PADDING
    expected = [[0.9, pad, pad, pad], [0.8, 0.6, 0.5, 0.3], [pad, pad, pad, pad]]
    torch.testing.assert_close(top, torch.tensor(expected))
    empty = top_scores_per_class(torch.zeros(0, dtype=torch.long), torch.zeros(0), 2, 3)
    assert empty.tolist() == [[pad] * 3] * 2
    with pytest.raises(ValueError, match="labels must lie in 1..3"):
        top_scores_per_class(torch.tensor([4]), torch.tensor([0.5]), NUM_CLASSES, TOP_K)


def test_top_scores_per_image_stacks_each_images_rows() -> None:
    images = random_detections(5, seed=3)
    detections = [{"labels": lab, "scores": s} for lab, s in images]
    rows = top_scores_per_image(detections, NUM_CLASSES, TOP_K)
    assert rows.shape == (5, NUM_CLASSES, TOP_K)
    for row, (lab, s) in zip(rows, images):
        torch.testing.assert_close(row, top_scores_per_class(lab, s, NUM_CLASSES, TOP_K))
    assert top_scores_per_image([], NUM_CLASSES, TOP_K).shape == (0, NUM_CLASSES, TOP_K)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_online_thresholds_equal_offline_on_the_same_scores(alpha: float) -> None:
    images = random_detections(num_images=50, seed=0)
    prior = class_prior_from_counts([30, 10, 2], num_images=20)  # E_c = 50 * 2.1 * ratio_c
    labels = torch.cat([lab for lab, _ in images])
    scores = torch.cat([s for _, s in images])
    offline = act_thresholds(scores_by_class(labels, scores, NUM_CLASSES), 50, prior, alpha)
    online = online_act_thresholds(filled_queue(images), prior, alpha)
    assert torch.equal(online[0], offline[0]) and torch.equal(online[1], offline[1])
    # Class 3's uncertain rank int(E_3) = int(50 * 2.1 * 2/42) = 2 and class 1's reliable rank
    # with alpha = 1 lie inside the lists; the comparison is not one of floors only.
    assert (offline[1] > 0.05).any()


def test_queue_is_bounded_and_keeps_the_newest_images() -> None:
    images = random_detections(num_images=7, seed=1)
    queue = ScoreQueue(capacity=3, num_classes=NUM_CLASSES, top_k=TOP_K)
    for labels, scores in images:  # one image per step, wrapping around twice
        queue.push(top_scores_per_class(labels, scores, NUM_CLASSES, TOP_K)[None])
    assert queue.num_images == 3 and queue.scores.shape == (NUM_CLASSES, 3, TOP_K)
    newest = filled_queue(images[-3:])
    for kept, expected in zip(queue.scores_per_class(), newest.scores_per_class()):
        assert sorted(kept.tolist()) == sorted(expected.tolist())
    # A batch larger than the queue keeps its last `capacity` images.
    assert filled_queue(images, capacity=3).scores_per_class()[0].sort().values.tolist() == (
        newest.scores_per_class()[0].sort().values.tolist()
    )


def test_limited_read_gives_the_same_thresholds_as_the_whole_queue() -> None:
    queue = filled_queue(random_detections(num_images=40, seed=2))
    prior = class_prior_from_counts([5, 5, 1], num_images=10)
    whole = act_thresholds(queue.scores_per_class(), queue.num_images, prior, 0.2)
    assert all(torch.equal(a, b) for a, b in zip(whole, online_act_thresholds(queue, prior, 0.2)))


def test_queue_checkpoint_round_trip_continues_identically() -> None:
    images = random_detections(num_images=9, seed=3)
    queue = filled_queue(images[:5], capacity=6)
    buffer = io.BytesIO()
    torch.save(queue.state_dict(), buffer)
    buffer.seek(0)
    restored = ScoreQueue(6, NUM_CLASSES, TOP_K)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for q in (queue, restored):  # wraps around after the restore
        q.push(
            torch.stack([top_scores_per_class(lab, s, NUM_CLASSES, TOP_K) for lab, s in images[5:]])
        )
    assert torch.equal(queue.scores, restored.scores)
    assert (
        (queue.next_slot, queue.num_images)
        == (restored.next_slot, restored.num_images)
        == (
            3,
            6,
        )
    )
    with pytest.raises(ValueError, match="classes x top"):
        ScoreQueue(6, NUM_CLASSES + 1, TOP_K).load_state_dict(queue.state_dict())


def test_callback_state_holds_the_queue_only_in_online_mode() -> None:
    callback = ACTRefresh(mode="online", queue_images=6, queue_top_k=TOP_K)
    callback.queue = filled_queue(random_detections(num_images=4, seed=4), capacity=6)
    fresh = ACTRefresh(mode="online", queue_images=6, queue_top_k=TOP_K)
    fresh.load_state_dict(callback.state_dict())  # before setup, as Lightning may call it
    assert torch.equal(fresh.queue.scores, callback.queue.scores)
    assert fresh.queue.num_images == 4
    assert ACTRefresh().state_dict() == {}  # the refresh count is the module's
    with pytest.raises(ValueError, match="method.act.mode"):
        ACTRefresh(mode="sometimes")


def test_a_threshold_floor_below_the_pseudo_labelling_floor_is_refused() -> None:
    with pytest.raises(ValueError, match=r"method.act.min_threshold=0.01 is below .* 0.05"):
        ACTRefresh(min_threshold=0.01)
    assert ACTRefresh(min_threshold=0.05).min_threshold == 0.05
