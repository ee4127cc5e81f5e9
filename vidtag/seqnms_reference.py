"""Seq-NMS and Seq-NMS+ written straight from the papers, in plain Python loops.

Slow on purpose: the full dynamic programme is recomputed after every path.
It is the yardstick for :mod:`vidtag.linking` (its tests compare the two;
``benchmarks/bench_linking.py`` times them) and follows the same documented
rules (see the module docstring there):

* a[t, j] = s_j + max over remaining linked i in frame t-1 of a[t-1, i];
  a[t, j] = s_j when there is none.  Equal predecessors: lowest index.
* the path ends at the largest a; ties: earliest frame, then lowest index.
* classes in increasing label order; repeat until no box of the class remains.
* IoU in float64 from the float32 boxes with the same formula.
"""

from __future__ import annotations

import numpy as np

from vidtag.types import Detections


def iou(a, b) -> float:
    """IoU of two xyxy boxes given as 4 Python floats each."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _as_lists(frames):
    boxes = [[[float(v) for v in box] for box in f.boxes] for f in frames]
    scores = [[float(s) for s in f.scores] for f in frames]
    labels = [[int(c) for c in f.labels] for f in frames]
    return boxes, scores, labels


def reference_nms(frames, nms_iou):
    """Per frame and class: keep boxes by score (desc, ties by index), drop IoU > nms_iou.

    Returns: list (per frame) of sets of kept box indices.
    """
    boxes, scores, labels = _as_lists(frames)
    kept = []
    for t in range(len(frames)):
        order = sorted(range(len(boxes[t])), key=lambda j: (-scores[t][j], j))
        keep = []
        for j in order:
            if all(labels[t][k] != labels[t][j] or iou(boxes[t][k], boxes[t][j]) <= nms_iou for k in keep):
                keep.append(j)
        kept.append(set(keep))
    return kept


def reference_paths(frames, *, link_iou=0.5, suppress_iou=0.3, nms_iou=None):
    """Same contract as :func:`vidtag.linking.seq_nms_paths`.

    Returns: list of (label, ((frame, box index), ...), score sum, max score).
    """
    boxes, scores, labels = _as_lists(frames)
    num_frames = len(frames)
    if nms_iou is None:
        remaining = [set(range(len(boxes[t]))) for t in range(num_frames)]
    else:
        remaining = reference_nms(frames, nms_iou)

    paths = []
    for label in sorted({c for frame_labels in labels for c in frame_labels}):
        # The graph: per frame the boxes of this class, and their links to the previous frame.
        of_class = [[j for j in range(len(boxes[t])) if labels[t][j] == label] for t in range(num_frames)]
        linked = {}
        for t in range(1, num_frames):
            for j in of_class[t]:
                linked[t, j] = [i for i in of_class[t - 1] if iou(boxes[t - 1][i], boxes[t][j]) >= link_iou]

        while any(j in remaining[t] for t in range(num_frames) for j in of_class[t]):
            value, back = {}, {}
            best_end = None
            for t in range(num_frames):
                for j in of_class[t]:
                    if j not in remaining[t]:
                        continue
                    before = None
                    if t > 0:
                        for i in linked[t, j]:
                            if i in remaining[t - 1] and (before is None or value[t - 1, i] > value[t - 1, before]):
                                before = i
                    if before is None:
                        value[t, j] = scores[t][j]
                        back[t, j] = None
                    else:
                        value[t, j] = scores[t][j] + value[t - 1, before]
                        back[t, j] = (t - 1, before)
                    if best_end is None or value[t, j] > value[best_end]:
                        best_end = (t, j)

            members = [best_end]
            while back[members[-1]] is not None:
                members.append(back[members[-1]])
            members.reverse()

            total = 0.0
            for t, j in members:
                total = scores[t][j] + total
            paths.append((label, tuple(members), total, max(scores[t][j] for t, j in members)))

            for t, j in members:
                remaining[t].discard(j)
                for k in of_class[t]:
                    if k in remaining[t] and iou(boxes[t][j], boxes[t][k]) >= suppress_iou:
                        remaining[t].discard(k)
    return paths


def reference_link(frames, method="seqnms+", *, link_iou=0.5, suppress_iou=0.3, nms_iou=0.5):
    """Same contract as :func:`vidtag.linking.link`."""
    if method == "none":
        return list(frames)
    paths = reference_paths(
        frames, link_iou=link_iou, suppress_iou=suppress_iou, nms_iou=nms_iou if method == "seqnms+" else None
    )
    track = [dict() for _ in frames]  # box index -> (track id, new score)
    for track_id, (_, members, total, peak) in enumerate(paths, start=1):
        mean = total / len(members)
        score = mean if method == "seqnms" else 0.5 * mean + 0.5 * peak
        for t, j in members:
            track[t][j] = (track_id, score)
    out = []
    for f, on_path in zip(frames, track):
        keep = sorted(on_path)
        out.append(
            Detections(
                f.boxes[keep],
                np.array([on_path[j][1] for j in keep], np.float32),
                f.labels[keep],
                np.array([on_path[j][0] for j in keep], np.int64),
            )
        )
    return out
