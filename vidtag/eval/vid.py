"""ImageNet VID mAP@0.5 with FGFA's small-box rule and motion categories.

Written from the definitions (FGFA, Zhu et al. 2017, and the ILSVRC devkit):

Matching, per class and per frame.  A ground-truth box of width ``w`` and
height ``h`` accepts a detection when their IoU is at least
``min(0.5, w*h / ((w+10)*(h+10)))`` (FGFA's rule: the threshold drops below
0.5 only for boxes smaller than about 25 x 25 px).  Detections are visited by
decreasing score; each takes, among the ground-truth boxes not yet taken whose
threshold it reaches, the one with the highest IoU.  Ground truth of every
motion category takes part in the matching.  Because a detection only
competes with detections of its own frame, visiting frame by frame gives the
same result as one global pass over all detections sorted by score.

Scoring a category (``all``, ``slow``, ``medium``, ``fast``):

* a detection matched to a ground-truth box of the category is a true
  positive;
* a detection matched to a box outside the category is ignored (neither true
  nor false positive), as are detections matched to ``ignore`` boxes (COCO
  ``iscrowd``);
* an unmatched detection is a false positive in every category;
* ground-truth boxes outside the category are not counted as misses.

Average precision is the all-point interpolated area (VOC 2010+ / ILSVRC,
which FGFA's evaluator uses): precision is made non-increasing from the right
(``p(r) = max_{r' >= r} p(r')``) and summed over the recall steps, with the
curve padded by (0, 0) and (1, 0).  It is not the 11-point VOC 2007 average
nor COCO's 101-point sampling.  A class with ground truth but no detection has
AP 0.  The mean runs over the classes that have ground truth in the category
(classes absent from the ground truth are left out, not counted as 0).

Motion categories: a ground-truth box's motion IoU is the mean IoU between it
and the boxes of the same track in frames ``t-10 .. t+10`` other than ``t``
itself (frames where the track is annotated).  Motion IoU > 0.9 is slow,
0.7 to 0.9 (inclusive) medium, < 0.7 fast.  A box whose track appears in no
other frame of its window (or that has no track id) has no motion IoU; it
counts in ``all`` only ("unknown").

Detections with tied scores keep their input order (stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidtag.eval.groundtruth import FrameBoxes, VideoBoxes
from vidtag.ops.np_boxes import box_iou  # noqa: F401  (part of this module's interface)

MOTION_CATEGORIES = ("slow", "medium", "fast")
SLOW, MEDIUM, FAST, UNKNOWN, IGNORED = 0, 1, 2, 3, 4
"""Codes of a ground-truth box's category; UNKNOWN has no motion IoU, IGNORED is crowd."""

SLOW_ABOVE = 0.9
FAST_BELOW = 0.7


def paired_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``boxes1[i]`` with ``boxes2[i]``: float[N, 4] xyxy twice -> float64[N]."""
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_thresholds(gt_boxes: np.ndarray, iou_threshold: float = 0.5, small_box_rule: bool = True) -> np.ndarray:
    """IoU each ground-truth box needs: ``min(thr, w*h / ((w+10)*(h+10)))``.

    Args:
        gt_boxes (float[G, 4]): xyxy pixels; ``w = x2 - x1``, ``h = y2 - y1``.
        iou_threshold: the threshold for ordinary boxes (0.5 for VID).
        small_box_rule: apply FGFA's lower threshold to small boxes.

    Returns:
        float64[G].
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    thr = np.full(len(gt_boxes), float(iou_threshold))
    if small_box_rule:
        w = np.clip(gt_boxes[:, 2] - gt_boxes[:, 0], 0, None)
        h = np.clip(gt_boxes[:, 3] - gt_boxes[:, 1], 0, None)
        thr = np.minimum(thr, w * h / ((w + 10.0) * (h + 10.0)))
    return thr


def greedy_match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Match one frame's detections of one class to its ground truth.

    Args:
        det_boxes (float[D, 4]): xyxy.
        det_scores (float[D]): visited by decreasing score, ties in input order.
        gt_boxes (float[G, 4]): xyxy.
        thresholds (float[G]): IoU each ground-truth box needs (>=).

    Returns:
        int64[D]: index of the ground-truth box each detection took, -1 if none.
    """
    matched = np.full(len(det_boxes), -1, dtype=np.int64)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return matched
    iou = box_iou(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        candidates = np.where(taken | (iou[d] < thresholds) | (iou[d] <= 0.0), -1.0, iou[d])
        g = int(np.argmax(candidates))
        if candidates[g] >= 0.0:
            matched[d] = g
            taken[g] = True
    return matched


def motion_ious(video: VideoBoxes, window: int = 10) -> dict[int, np.ndarray]:
    """Each ground-truth box's mean IoU with its own track in frames t-window..t+window.

    Args:
        video: ground truth; ``track_ids`` link boxes across frames.
        window: frames on each side (FGFA: 10).

    Returns:
        frame_id -> float64[N] aligned with ``video.frames[frame_id]``; NaN for
        boxes without a track id or without another box of their track in
        the window.
    """
    tracks: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame_id, frame in video.frames.items():
        seen = set()
        for i, tid in enumerate(frame.track_ids):
            if tid >= 0 and tid not in seen:
                seen.add(int(tid))
                tracks.setdefault(int(tid), []).append((frame_id, frame.boxes[i]))
    track_frames = {}
    for tid, items in tracks.items():
        items.sort(key=lambda x: x[0])
        track_frames[tid] = (np.array([f for f, _ in items]), np.stack([b for _, b in items]))
    out: dict[int, np.ndarray] = {}
    for frame_id, frame in video.frames.items():
        values = np.full(len(frame), np.nan)
        for i, tid in enumerate(frame.track_ids):
            if tid < 0:
                continue
            frames, boxes = track_frames[int(tid)]
            lo = np.searchsorted(frames, frame_id - window, side="left")
            hi = np.searchsorted(frames, frame_id + window, side="right")
            sel = np.arange(lo, hi)
            sel = sel[frames[sel] != frame_id]
            if len(sel):
                values[i] = paired_iou(np.repeat(frame.boxes[i : i + 1], len(sel), 0), boxes[sel]).mean()
        out[frame_id] = values
    return out


def motion_category(motion_iou: np.ndarray) -> np.ndarray:
    """float[N] motion IoU -> int8[N] codes SLOW (> 0.9), MEDIUM (0.7..0.9), FAST (< 0.7), UNKNOWN (NaN)."""
    m = np.asarray(motion_iou, dtype=np.float64)
    codes = np.full(m.shape, UNKNOWN, dtype=np.int8)
    codes[m > SLOW_ABOVE] = SLOW
    codes[(m >= FAST_BELOW) & (m <= SLOW_ABOVE)] = MEDIUM
    codes[m < FAST_BELOW] = FAST
    return codes


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+ / ILSVRC).

    Args:
        recall (float[K]): non-decreasing, one value per ranked detection.
        precision (float[K]): precision at the same ranks.

    Returns:
        ``sum_k (r_k - r_{k-1}) * max_{j >= k} p_j`` over the padded curve.
    """
    r = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    p = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def ap_from_ranked(scores: np.ndarray, tp: np.ndarray, ignored: np.ndarray, num_positives: int) -> float | None:
    """AP from scored detections already labelled true positive / ignored / false positive.

    Args:
        scores (float[D]).
        tp (bool[D]): true positive.
        ignored (bool[D]): dropped from the ranking; the rest are false positives.
        num_positives: ground-truth boxes that count (recall's denominator).

    Returns:
        AP in [0, 1], or None when ``num_positives`` is 0.
    """
    if num_positives <= 0:
        return None
    keep = ~np.asarray(ignored, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)[keep]
    tp = np.asarray(tp, dtype=bool)[keep]
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp_cum = np.cumsum(tp[order])
    ranks = np.arange(1, len(order) + 1)
    return average_precision(tp_cum / num_positives, tp_cum / ranks)


@dataclass
class ClassMatches:
    """All detections of one class with the category of the box each took.

    Attributes:
        scores (float64[D]).
        taken (int8[D]): category code of the matched ground-truth box, or -1
            for a false positive.
        gt_counts (int64[5]): ground-truth boxes per category code.
    """

    scores: list = field(default_factory=list)
    taken: list = field(default_factory=list)
    gt_counts: np.ndarray = field(default_factory=lambda: np.zeros(5, np.int64))


def collect_matches(
    gt_videos: dict[str, VideoBoxes],
    pred_videos: dict[str, VideoBoxes],
    pairs: dict[str, str],
    iou_threshold: float = 0.5,
    small_box_rule: bool = True,
    motion_window: int = 10,
) -> dict[str, ClassMatches]:
    """Match every paired video, frame by frame and class by class.

    Args:
        gt_videos, pred_videos: name -> VideoBoxes; prediction class names
            already mapped to ground-truth names.
        pairs: gt name -> pred name (see :func:`groundtruth.match_videos`);
            only these ground-truth videos are scored.  Prediction frames
            without ground truth are not scored.

    Returns:
        class name -> ClassMatches (scores and ``taken`` as numpy arrays).
    """
    per_class: dict[str, ClassMatches] = {}
    empty = FrameBoxes.empty(with_scores=True)
    for gt_name, pred_name in pairs.items():
        gt_video = gt_videos[gt_name]
        pred_frames = pred_videos[pred_name].frames
        motion = motion_ious(gt_video, motion_window)
        for frame_id, gt in gt_video.frames.items():
            codes = motion_category(motion[frame_id])
            codes[gt.ignore] = IGNORED
            pred = pred_frames.get(frame_id, empty)
            for cls in set(gt.classes) | set(pred.classes):
                cm = per_class.setdefault(cls, ClassMatches())
                g = gt.classes == cls
                d = pred.classes == cls
                cm.gt_counts += np.bincount(codes[g], minlength=5)
                if not d.any():
                    continue
                gt_boxes = gt.boxes[g]
                matched = greedy_match(pred.boxes[d], pred.scores[d], gt_boxes, match_thresholds(gt_boxes, iou_threshold, small_box_rule))
                taken = np.full(len(matched), -1, dtype=np.int8)
                hit = matched >= 0
                taken[hit] = codes[g][matched[hit]]
                cm.scores.extend(pred.scores[d].tolist())
                cm.taken.extend(taken.tolist())
    for cm in per_class.values():
        cm.scores = np.asarray(cm.scores, dtype=np.float64)
        cm.taken = np.asarray(cm.taken, dtype=np.int8)
    return per_class


def _category_codes(category: str) -> tuple[int, ...]:
    return {"all": (SLOW, MEDIUM, FAST, UNKNOWN), "slow": (SLOW,), "medium": (MEDIUM,), "fast": (FAST,)}[category]


def class_ap(cm: ClassMatches, category: str = "all") -> float | None:
    """AP of one class in one category (``all``, ``slow``, ``medium``, ``fast``); None without ground truth."""
    codes = _category_codes(category)
    tp = np.isin(cm.taken, codes)
    ignored = (cm.taken >= 0) & ~tp
    return ap_from_ranked(cm.scores, tp, ignored, int(cm.gt_counts[list(codes)].sum()))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def vid_map(
    gt_videos: dict[str, VideoBoxes],
    pred_videos: dict[str, VideoBoxes],
    pairs: dict[str, str],
    classes: tuple[str, ...] | None = None,
    iou_threshold: float = 0.5,
    small_box_rule: bool = True,
    motion_window: int = 10,
) -> dict:
    """ImageNet VID mAP overall and per motion category.

    Args:
        gt_videos, pred_videos, pairs: see :func:`collect_matches`.
        classes: order of ``per_class`` (e.g. the label space); classes with
            ground truth that are not listed follow in sorted order.
        iou_threshold, small_box_rule, motion_window: the matching rule and
            the motion window (FGFA: 0.5, True, 10).

    Returns:
        ``{"all", "slow", "medium", "fast"}``: mAP in [0, 1] or None when the
        category has no ground truth; ``per_class``: class -> AP (classes with
        ground truth); ``per_class_motion``: category -> class -> AP (classes
        with ground truth in that category); ``num_gt``: ground-truth boxes
        per category plus ``unknown`` (no motion IoU) and ``ignored``
        (crowd).
    """
    per_class = collect_matches(gt_videos, pred_videos, pairs, iou_threshold, small_box_rule, motion_window)
    order = [c for c in (classes or ()) if c in per_class]
    order += sorted(c for c in per_class if c not in order)
    result: dict = {}
    per_cat: dict[str, dict[str, float]] = {}
    for category in ("all",) + MOTION_CATEGORIES:
        aps = {c: class_ap(per_class[c], category) for c in order}
        per_cat[category] = {c: ap for c, ap in aps.items() if ap is not None}
        result[category] = _mean(per_cat[category].values())
    result["per_class"] = per_cat["all"]
    result["per_class_motion"] = {k: per_cat[k] for k in MOTION_CATEGORIES}
    counts = sum((cm.gt_counts for cm in per_class.values()), np.zeros(5, np.int64))
    result["num_gt"] = {
        "all": int(counts[[SLOW, MEDIUM, FAST, UNKNOWN]].sum()),
        "slow": int(counts[SLOW]),
        "medium": int(counts[MEDIUM]),
        "fast": int(counts[FAST]),
        "unknown": int(counts[UNKNOWN]),
        "ignored": int(counts[IGNORED]),
    }
    return result
