"""Box ops in numpy, for code that holds :class:`vidtag.types.Detections` (no torch import)."""

from __future__ import annotations

import numpy as np


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU in numpy (same contract as :func:`vidtag.ops.boxes.box_iou`, which takes tensors).

    Args:
        boxes1 (float[N, 4]): xyxy pixels.
        boxes2 (float[M, 4]): xyxy pixels.

    Returns:
        float64[N, M] in [0, 1]; 0 where the union is empty.
    """
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
