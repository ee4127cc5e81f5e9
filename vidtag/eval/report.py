"""One call that evaluates predictions against ground truth and returns every figure.

:func:`evaluate` loads both sides (:mod:`vidtag.eval.groundtruth`), pairs
videos by name, maps prediction classes onto ground-truth classes
(:mod:`vidtag.eval.classmap`), and computes

* ``vid_map``: ImageNet VID mAP@0.5 with FGFA's small-box rule, overall and
  per motion category (:mod:`vidtag.eval.vid`);
* ``coco``: COCO AP, AP50, AP75, ... through pycocotools
  (:mod:`vidtag.eval.coco_ap`);
* ``tracking``: MOTA, IDF1, HOTA, ... when the predictions carry track ids
  and the ground truth does too (:mod:`vidtag.eval.tracking`), else None;
  ``tracking_skipped`` then says why when the ground truth lacks them.

Scope: only ground-truth videos with a prediction video are scored (the
others are listed in ``counts``); within them every annotated frame is scored
and a frame the prediction lacks has no detections.  Means over classes run
over the ground-truth classes present in the scored frames; ``all_mapped``
is the same mean restricted to classes some prediction class maps to (the
fair figure for a model that cannot name every class, e.g. a COCO model on
VID).  The result holds only JSON types (None for undefined figures).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from vidtag.eval.classmap import load_class_map, resolve_class_map
from vidtag.eval.coco_ap import coco_ap
from vidtag.eval.groundtruth import FrameBoxes, GroundTruth, VideoBoxes, load_groundtruth, load_predictions, match_videos
from vidtag.eval.tracking import evaluate_tracking
from vidtag.eval.vid import vid_map


def apply_class_map(videos: dict[str, VideoBoxes], mapping: dict[str, str]) -> tuple[dict[str, VideoBoxes], Counter]:
    """Rename prediction classes to ground-truth names and drop the unmapped ones.

    Returns:
        (new videos, Counter of dropped boxes per original class name).
    """
    dropped: Counter = Counter()
    out = {}
    for name, video in videos.items():
        frames = {}
        for frame_id, f in video.frames.items():
            keep = np.array([c in mapping for c in f.classes], dtype=bool)
            dropped.update(f.classes[~keep].tolist())
            kept = f[keep]
            frames[frame_id] = FrameBoxes(kept.boxes, [mapping[c] for c in kept.classes], kept.track_ids, kept.scores, kept.ignore)
        out[name] = VideoBoxes(video.name, frames, video.width, video.height)
    return out, dropped


def evaluate(
    pred_path: str | Path | Sequence[str | Path],
    gt_path: str | Path | GroundTruth,
    class_map: str | Path | dict | None = None,
    *,
    iou_threshold: float = 0.5,
    small_box_rule: bool = True,
    motion_window: int = 10,
    tracking: bool | None = None,
    coco: bool = True,
) -> dict:
    """Evaluate vidtag predictions against ground truth.

    Args:
        pred_path: ``.coco.json`` file(s) or a folder of them.
        gt_path: CocoVID / COCO JSON, an ImageNet VID annotation folder, or
            an already loaded :class:`GroundTruth`.
        class_map: user map pred name -> gt name (a dict, or a JSON / CSV
            file); see :mod:`vidtag.eval.classmap` for how it combines with
            identity and the built-in COCO -> VID map.
        iou_threshold: VID and tracking (MOTA / IDF1) matching IoU (0.5).
        small_box_rule: FGFA's lower threshold for small boxes in VID mAP.
        motion_window: frames on each side for motion IoU (FGFA: 10).
        tracking: compute tracking metrics; None: when any kept prediction
            has a track id.
        coco: compute the pycocotools figures.

    Returns:
        ``{"vid_map", "coco", "tracking", "class_map", "counts", "settings"}``,
        JSON-serialisable.

    Raises:
        ValueError: unreadable input, a bad class map, or no prediction video
            matches a ground-truth video.
    """
    gt = gt_path if isinstance(gt_path, GroundTruth) else load_groundtruth(gt_path)
    pred_raw = load_predictions(pred_path)
    pairs, unmatched_gt, unmatched_pred = match_videos(pred_raw, gt.videos)
    if not pairs:
        raise ValueError(
            "no prediction video matches a ground-truth video by name "
            f"(predictions: {', '.join(sorted(pred_raw)[:5])}; ground truth: {', '.join(sorted(gt.videos)[:5])}"
            f"{', ...' if len(gt.videos) > 5 else ''})"
        )
    user_map = load_class_map(class_map) if isinstance(class_map, (str, Path)) else class_map
    pred_classes = set().union(*(v.class_names() for v in pred_raw.values()))
    mapping = resolve_class_map(pred_classes, gt.classes, user_map)
    pred, dropped = apply_class_map(pred_raw, mapping)

    vid = vid_map(gt.videos, pred, pairs, gt.classes, iou_threshold, small_box_rule, motion_window)
    targets = set(mapping.values())
    mapped_aps = [ap for c, ap in vid["per_class"].items() if c in targets]
    vid["all_mapped"] = float(np.mean(mapped_aps)) if mapped_aps else None

    coco_result = coco_ap(gt.videos, pred, pairs, gt.classes) if coco else None

    has_tracks = any((f.track_ids >= 0).any() for v in pred.values() for f in v.frames.values())
    gt_has_tracks = any((f.track_ids >= 0).any() for g in pairs for f in gt.videos[g].frames.values())
    tracking_result = None
    tracking_skipped = None
    if (tracking or (tracking is None and has_tracks)) and not gt_has_tracks:
        tracking_skipped = "the ground truth has no track ids (instance_id / trackid): MOTA, IDF1 and HOTA need them"
    elif tracking or (tracking is None and has_tracks):
        tracking_result = evaluate_tracking(gt.videos, pred, pairs, gt_classes=targets, iou_threshold=iou_threshold)
        tracking_result["classes"] = sorted(targets, key=lambda c: gt.classes.index(c) if c in gt.classes else len(gt.classes))

    scored_frames = {(g, fid) for g in pairs for fid in gt.videos[g].frames}
    pred_outside = sum(fid not in gt.videos[g].frames for g, p in pairs.items() for fid in pred_raw[p].frames)
    counts = {
        "gt_videos": len(gt.videos),
        "pred_videos": len(pred_raw),
        "matched_videos": len(pairs),
        "unmatched_gt_videos": unmatched_gt,
        "unmatched_pred_videos": unmatched_pred,
        "scored_frames": len(scored_frames),
        "pred_frames_outside_gt": int(pred_outside),
        "gt_boxes": int(sum(gt.videos[g].num_boxes for g in pairs)),
        "pred_boxes": int(sum(pred_raw[p].num_boxes for p in pairs.values())),
        "pred_boxes_kept": int(sum(pred[p].num_boxes for p in pairs.values())),
        "dropped_pred_classes": dict(sorted(dropped.items())),
    }
    return {
        "vid_map": vid,
        "coco": coco_result,
        "tracking": tracking_result,
        "tracking_skipped": tracking_skipped,
        "class_map": dict(sorted(mapping.items())),
        "counts": counts,
        "settings": {
            "iou_threshold": float(iou_threshold),
            "small_box_rule": bool(small_box_rule),
            "motion_window": int(motion_window),
            "ap_interpolation": "all-point (VOC 2010+/ILSVRC)",
            "tracking": "class-agnostic over mapped classes",
        },
    }


def _pct(value) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}"


def format_rows(result: dict, per_class: bool = True) -> list[tuple[str, str, str]]:
    """Rows ``(section, metric, value)`` for a table; ratios as percentages with one decimal.

    Sections: ``VID`` (mAP overall, mapped classes, slow / medium / fast, and
    per class when ``per_class``), ``COCO``, ``Tracking`` (when present) and
    ``Counts``.  Undefined figures show as ``-``.
    """
    rows: list[tuple[str, str, str]] = []
    vid = result["vid_map"]
    rows.append(("VID", "mAP@0.5", _pct(vid["all"])))
    rows.append(("VID", "mAP@0.5 (mapped classes)", _pct(vid.get("all_mapped"))))
    for cat in ("slow", "medium", "fast"):
        rows.append(("VID", f"mAP@0.5 {cat}", _pct(vid[cat])))
    if per_class:
        for cls, ap in vid["per_class"].items():
            rows.append(("VID", f"AP {cls}", _pct(ap)))
    if result.get("coco"):
        for key in ("AP", "AP50", "AP75"):
            rows.append(("COCO", key, _pct(result["coco"][key])))
    tr = result.get("tracking")
    if tr:
        for key in ("MOTA", "MOTP", "IDF1", "HOTA", "DetA", "AssA"):
            rows.append(("Tracking", key, _pct(tr[key])))
        for key in ("IDSW", "FP", "FN", "gt_tracks", "pred_tracks"):
            rows.append(("Tracking", key, str(tr[key])))
    elif result.get("tracking_skipped"):
        rows.append(("Tracking", "not computed", result["tracking_skipped"]))
    c = result["counts"]
    rows.append(("Counts", "videos matched / gt / pred", f"{c['matched_videos']} / {c['gt_videos']} / {c['pred_videos']}"))
    rows.append(("Counts", "frames scored", str(c["scored_frames"])))
    rows.append(("Counts", "gt boxes", str(c["gt_boxes"])))
    rows.append(("Counts", "pred boxes kept / total", f"{c['pred_boxes_kept']} / {c['pred_boxes']}"))
    n = vid["num_gt"]
    rows.append(("Counts", "gt boxes slow / medium / fast / unknown", f"{n['slow']} / {n['medium']} / {n['fast']} / {n['unknown']}"))
    return rows
