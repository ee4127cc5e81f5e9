"""COCO AP, AP50, AP75 through pycocotools.

The internal videos (:mod:`vidtag.eval.groundtruth`) are turned into one COCO
ground-truth dict and one results list: every ground-truth frame of every
scored video becomes an image, categories are the ground truth's classes
(ids from 1 in label-space order).  pycocotools then does the matching (101
recall points, IoU 0.50:0.95, max 100 detections per image, area ranges), so
these figures are comparable with any other COCO evaluation.

pycocotools' ``COCO.loadRes`` fails on an empty result list;
:func:`vidtag.formats.coco.load_results` builds an empty results object
instead, which makes AP 0 when there is ground truth.
pycocotools reports -1 for an undefined figure (no ground truth); it is
returned as None.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from vidtag.eval.groundtruth import FrameBoxes, VideoBoxes, xyxy_to_xywh
from vidtag.formats.coco import load_results

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""The 12 numbers of ``COCOeval.stats``, in order."""


def to_coco_pair(
    gt_videos: dict[str, VideoBoxes], pred_videos: dict[str, VideoBoxes], pairs: dict[str, str], classes
) -> tuple[dict, list[dict]]:
    """Build a COCO ground-truth dict and a results list.

    Args:
        gt_videos, pred_videos: name -> VideoBoxes (prediction classes already
            mapped to ground-truth names; other names are skipped).
        pairs: gt name -> pred name; only these videos are converted.
        classes: category names in id order (ids from 1).

    Returns:
        (gt dict with ``images``, ``annotations`` (bbox xywh, area = w*h,
        ``iscrowd`` from ``ignore``), ``categories``; results list of
        ``{image_id, category_id, bbox xywh, score}``).
    """
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    images, annotations, results = [], [], []
    empty = FrameBoxes.empty(with_scores=True)
    for gt_name, pred_name in pairs.items():
        gt_video = gt_videos[gt_name]
        pred_frames = pred_videos[pred_name].frames
        for frame_id, gt in gt_video.frames.items():
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{gt_name}/{frame_id:06d}", "width": gt_video.width, "height": gt_video.height})
            for box, cls, crowd in zip(xyxy_to_xywh(gt.boxes), gt.classes, gt.ignore):
                if cls not in cat_id:
                    continue
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": cat_id[cls],
                        "bbox": [float(v) for v in box],
                        "area": float(max(box[2], 0.0) * max(box[3], 0.0)),
                        "iscrowd": int(crowd),
                    }
                )
            pred = pred_frames.get(frame_id, empty)
            for box, cls, score in zip(xyxy_to_xywh(pred.boxes), pred.classes, pred.scores):
                if cls in cat_id:
                    results.append({"image_id": image_id, "category_id": cat_id[cls], "bbox": [float(v) for v in box], "score": float(score)})
    categories = [{"id": i, "name": c, "supercategory": "object"} for c, i in cat_id.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _import_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("COCO AP needs pycocotools: pip install pycocotools") from err
    return COCO, COCOeval


def coco_stats(gt: dict, results: list[dict]) -> dict[str, float | None]:
    """Run ``COCOeval`` (bbox) and return its 12 stats by name.

    Args:
        gt: COCO ground-truth dict (``images``, ``annotations``,
            ``categories``); bbox xywh pixels.
        results: ``[{image_id, category_id, bbox xywh, score}]``; may be empty.

    Returns:
        :data:`STAT_NAMES` -> value in [0, 1], None where pycocotools gives -1
        (no ground truth in that range).
    """
    COCO, COCOeval = _import_pycocotools()
    # pycocotools prints progress; a library stays quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: list(v) for k, v in gt.items()}
        coco_gt.createIndex()
        coco_dt = load_results(coco_gt, [dict(r) for r in results])
        if not gt["annotations"]:
            return {name: None for name in STAT_NAMES}
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if v < 0 else float(v)) for name, v in zip(STAT_NAMES, np.asarray(evaluator.stats, dtype=np.float64))}


def coco_ap(
    gt_videos: dict[str, VideoBoxes], pred_videos: dict[str, VideoBoxes], pairs: dict[str, str], classes
) -> dict[str, float | None]:
    """COCO box AP of the paired videos: ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}``.

    See :func:`to_coco_pair` for the arguments.
    """
    stats = coco_stats(*to_coco_pair(gt_videos, pred_videos, pairs, classes))
    return {k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
