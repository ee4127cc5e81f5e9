"""vidtag.carry: boxes a degraded frame borrows from the clean frames on both sides."""

from __future__ import annotations

import numpy as np
import pytest

from vidtag.carry import add_unseen, carry_over, match_boxes
from vidtag.types import Detections


def _dets(boxes, scores, labels):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(labels))


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _reference_match(before, after, min_iou):
    """Plain loops: repeatedly take the unused same-label pair of largest IoU (>= min_iou),
    ties to the lowest before index, then the lowest after index."""
    pairs, used_i, used_j = [], set(), set()
    while True:
        best = None
        for i in range(len(before)):
            for j in range(len(after)):
                if i in used_i or j in used_j or before.labels[i] != after.labels[j]:
                    continue
                v = _iou([float(x) for x in before.boxes[i]], [float(x) for x in after.boxes[j]])
                if v >= min_iou and (best is None or v > best[0]):
                    best = (v, i, j)
        if best is None:
            return pairs
        pairs.append(best[1:])
        used_i.add(best[1])
        used_j.add(best[2])


def test_a_hand_worked_burst():
    # a person moving right 2 px a frame, seen on frame 0 and frame 4; a dog only before; a cat on both but apart
    before = _dets([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]], [0.9, 0.8, 0.7], [0, 16, 15])
    after = _dets([[8, 0, 18, 10], [130, 0, 140, 10]], [0.6, 0.9], [0, 15])
    # person: IoU 2*10 / (200 - 20) = 0.111 < 0.3 -> not the same object at the default threshold
    assert match_boxes(before, after) == []
    assert match_boxes(before, after, min_iou=0.1) == [(0, 0)]
    carried = carry_over(before, after, 0.25, min_iou=0.1)  # frame 1 of 0..4
    np.testing.assert_allclose(carried.boxes, [[2, 0, 12, 10]])
    assert carried.scores.tolist() == [pytest.approx(0.6)] and carried.labels.tolist() == [0]
    # frame 1 already has the person (IoU 0.67 >= 0.5): nothing added; a frame that lost it gets it back
    own = _dets([[1, 0, 11, 10]], [0.3], [0])
    assert len(add_unseen(own, carried)) == 1
    other_class = _dets([[2, 0, 12, 10]], [0.3], [56])
    merged = add_unseen(other_class, carried)
    np.testing.assert_allclose(merged.boxes, [[2, 0, 12, 10], [2, 0, 12, 10]])
    assert merged.labels.tolist() == [56, 0] and merged.track_ids is None
    assert len(add_unseen(Detections.empty(), carried)) == 1
    assert len(carry_over(before, Detections.empty(), 0.5)) == 0


def test_matching_equals_the_plain_loop_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = rng.integers(0, 7, size=2)
        xy = rng.integers(0, 40, size=(n + m, 2)).astype(np.float32)
        wh = rng.integers(4, 20, size=(n + m, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, 2, size=n + m)
        before = _dets(boxes[:n], rng.random(n), labels[:n])
        after = _dets(boxes[n:], rng.random(m), labels[n:])
        assert match_boxes(before, after, 0.2) == _reference_match(before, after, 0.2)
