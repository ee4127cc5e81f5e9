"""Box ops in plain torch (no torchvision).

Every function names the box format it takes.  ``xyxy`` is x1, y1, x2, y2 in
pixels; ``xywh`` is x, y (top-left), width, height in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) xyxy -> Tensor[..., 4] xywh."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) xywh -> Tensor[..., 4] xyxy."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """boxes (Tensor[N, 4]) xyxy -> Tensor[N] areas (0 for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU.

    Args:
        boxes1 (Tensor[N, 4]): xyxy.
        boxes2 (Tensor[M, 4]): xyxy.

    Returns:
        Tensor[N, M]: IoU in [0, 1]; 0 where the union is empty.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (Tensor[N, 4]): xyxy.
        scores (Tensor[N]): higher is better.
        iou_threshold (float): a box is dropped when its IoU with a kept,
            higher-scoring box is strictly greater than this.

    Returns:
        Tensor[K] int64: indices of kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    n = len(order)
    # Suppression matrix evaluated greedily on the CPU: the loop is over kept
    # boxes only, and each step is one vectorised row update.
    overlaps = (iou > iou_threshold).cpu()
    removed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlaps[i]
    keep_t = torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)
    return order[keep_t]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes of different labels never suppress each other.

    Args:
        boxes (Tensor[N, 4]): xyxy.
        scores (Tensor[N]).
        labels (Tensor[N]) int.
        iou_threshold (float).

    Returns:
        Tensor[K] int64: kept indices by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    # Offset each class into its own region of the plane so one NMS pass
    # suffices (the torchvision trick, in plain torch).
    max_coordinate = boxes.abs().max()
    offsets = labels.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
