"""Evaluation of vidtag predictions: ImageNet VID mAP, COCO AP, tracking metrics.

``evaluate(pred_path, gt_path, class_map=None)`` returns every figure as a
JSON-ready dict; ``format_rows(result)`` turns it into table rows.  The
modules: ``groundtruth`` (loaders, one internal form), ``classmap``
(prediction -> ground-truth class names), ``vid`` (VID mAP, motion
categories), ``coco_ap`` (pycocotools), ``tracking`` (MOTA, IDF1, HOTA),
``report`` (the two entry points), ``robustness`` (the degraded held-out
footage protocol of ``benchmarks/robustness.py``).
"""

from vidtag.eval.report import evaluate, format_rows

__all__ = ["evaluate", "format_rows"]
