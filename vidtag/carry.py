"""Boxes a degraded frame borrows from the clean frames around it.

A frame lost to a burst of blur, noise or darkness often misses objects that
the clean frames on both sides of the burst still see.  :func:`carry_over`
pairs the boxes of a clean frame before and a clean frame after (same class,
one to one, by IoU) and places each pair's box on the frame between them by
straight-line interpolation; :func:`add_unseen` adds those carried boxes that
the degraded frame does not already have.  A box only one side sees is not
carried: it may have left or entered the view during the burst.

Boxes are float32 xyxy pixels as in :class:`vidtag.types.Detections`.
"""

from __future__ import annotations

import numpy as np

from vidtag.ops.np_boxes import box_iou
from vidtag.types import Detections

MATCH_IOU = 0.3  # a box before and a box after the burst are one object when their IoU is at least this
SEEN_IOU = 0.5  # a carried box the degraded frame already has (same class, IoU at least this) is not added


def match_boxes(before: Detections, after: Detections, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i, j)`` of a box of ``before`` and a box of ``after`` with the same
    label and IoU >= ``min_iou``, chosen greedily: the highest IoU first (ties: lower i, then lower j)."""
    iou = box_iou(before.boxes, after.boxes)
    iou[before.labels[:, None] != after.labels[None, :]] = -1.0
    i, j = np.nonzero(iou >= min_iou)
    order = np.lexsort((j, i, -iou[i, j]))
    used_i, used_j, pairs = set(), set(), []
    for k in order:
        if i[k] not in used_i and j[k] not in used_j:
            used_i.add(int(i[k]))
            used_j.add(int(j[k]))
            pairs.append((int(i[k]), int(j[k])))
    return pairs


def carry_over(before: Detections, after: Detections, u: float, min_iou: float = MATCH_IOU) -> Detections:
    """The boxes both ``before`` and ``after`` see, at fraction ``u`` in (0, 1) of the way from one to the other.

    Each pair of :func:`match_boxes` gives one box ``(1 - u) * box_before + u * box_after``
    with their label and the lower of their two scores.  No track ids.
    """
    pairs = match_boxes(before, after, min_iou)
    if not pairs:
        return Detections.empty()
    i, j = np.array(pairs).T
    boxes = (1 - u) * before.boxes[i].astype(np.float64) + u * after.boxes[j].astype(np.float64)
    return Detections(boxes.astype(np.float32), np.minimum(before.scores[i], after.scores[j]), before.labels[i])


def add_unseen(dets: Detections, carried: Detections, seen_iou: float = SEEN_IOU) -> Detections:
    """``dets`` followed by each box of ``carried`` that no box of ``dets`` with its label overlaps
    by IoU >= ``seen_iou``.  Track ids are dropped (linking runs later)."""
    if not len(carried):
        return dets
    iou = box_iou(carried.boxes, dets.boxes)
    iou[carried.labels[:, None] != dets.labels[None, :]] = 0.0
    new = ~(iou >= seen_iou).any(axis=1) if len(dets) else np.ones(len(carried), bool)
    return Detections(np.concatenate([dets.boxes, carried.boxes[new]]), np.concatenate([dets.scores, carried.scores[new]]),
                      np.concatenate([dets.labels, carried.labels[new]]))
