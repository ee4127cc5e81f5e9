"""Training on labelled video: NanoDet's GFL detection loss against ground truth.

For users who have boxes (a CocoVID JSON such as vidtag's own ``.coco.json``
output after correction, or an ImageNet VID folder) the PSLA modules can learn
from them instead of from the per-frame teacher.  The student's head output on
every frame of a clip that has ground truth is scored with the three terms
NanoDet-g trains with (nanodet-g.yml): quality focal loss on the class scores
(weight 1), distribution focal loss on the box bins (0.25) and GIoU loss on
the decoded boxes (2.0), after an ATSS assignment of ground-truth boxes to
cells (9 candidates per level, anchors of 5 strides, positive above the mean
plus standard deviation of the candidates' IoU and with the cell centre
inside the box).

Boxes are in network-input pixels (xyxy) throughout; labels are indices of the
detector's classes (COCO-80).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidtag.models.nanodet import NanoDetOutput, cell_centers, distances_to_boxes
from vidtag.ops.boxes import box_area, box_iou
from vidtag.train.losses import quality_focal_terms

QFL_WEIGHT, DFL_WEIGHT, GIOU_WEIGHT = 1.0, 0.25, 2.0  # nanodet-g.yml loss weights
ATSS_TOPK, ANCHOR_SCALE = 9, 5.0  # nanodet-g.yml: ATSS topk 9, octave_base_scale 5


@dataclass(frozen=True)
class FrameTargets:
    """Ground truth of one frame.

    Attributes:
        boxes (float32[M, 4]): xyxy in the pixels of the frames they go with.
        labels (int64[M]): class index of each box.
    """

    boxes: np.ndarray
    labels: np.ndarray


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and generalised IoU of matching rows: boxes1, boxes2 (Tensor[N, 4] xyxy) ->
    (Tensor[N] in [0, 1], Tensor[N] in [-1, 1])."""
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = box_area(boxes1) + box_area(boxes2) - inter
    hull = (torch.maximum(boxes1[:, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, :2], boxes2[:, :2])).clamp(min=0).prod(dim=1)
    eps = torch.finfo(boxes1.dtype).eps
    iou = inter / union.clamp(min=eps)
    return iou, iou - (hull - union) / hull.clamp(min=eps)


def atss_assign(gt_boxes: Tensor, centers: Tensor, cell_strides: Tensor, level_sizes: list[int], topk: int = ATSS_TOPK) -> Tensor:
    """Which ground-truth box each cell learns (ATSS, Zhang et al. 2020).

    Args:
        gt_boxes (Tensor[M, 4]): xyxy input pixels.
        centers (Tensor[N, 2]): cell centres, as from ``cell_centers``.
        cell_strides (Tensor[N]): each cell's stride.
        level_sizes: cells per pyramid level, in the order of the rows.
        topk: candidates per level and box (closest centres).

    Returns:
        Tensor[N] int64: index of the assigned box, -1 for background.  A cell
        that qualifies for several boxes takes the one it overlaps most.
    """
    n, m = centers.shape[0], gt_boxes.shape[0]
    assigned = torch.full((n,), -1, dtype=torch.long, device=centers.device)
    if m == 0:
        return assigned
    half = cell_strides[:, None] * ANCHOR_SCALE / 2
    anchors = torch.cat((centers - half, centers + half), dim=1)
    ious = box_iou(anchors, gt_boxes)  # [N, M]
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = torch.cdist(centers, gt_centers)  # [N, M]
    candidates, start = [], 0
    for size in level_sizes:
        k = min(topk, size)
        candidates.append(distances[start : start + size].topk(k, dim=0, largest=False).indices + start)
        start += size
    candidates = torch.cat(candidates)  # [C, M]
    cand_ious = ious.gather(0, candidates)
    threshold = cand_ious.mean(dim=0) + cand_ious.std(dim=0, unbiased=False)
    cx, cy = centers[candidates, 0], centers[candidates, 1]  # [C, M]
    inside = (cx > gt_boxes[:, 0]) & (cx < gt_boxes[:, 2]) & (cy > gt_boxes[:, 1]) & (cy < gt_boxes[:, 3])
    positive = (cand_ious >= threshold) & inside
    overlap = torch.full((n, m), -1.0, device=centers.device, dtype=ious.dtype)
    cols = torch.arange(m, device=centers.device).expand_as(candidates)
    overlap[candidates[positive], cols[positive]] = cand_ious[positive]
    best, index = overlap.max(dim=1)
    return torch.where(best >= 0, index, assigned)


def detection_loss(output: NanoDetOutput, targets: list[tuple[Tensor, Tensor] | None]) -> dict[str, Tensor]:
    """GFL loss of a batch of frames against ground truth.

    Args:
        output: head output for B frames (``cls_scores`` [B, N, K] sigmoid,
            ``box_dists`` [B, N, 4 * R]).
        targets: per frame ``(boxes Tensor[M, 4] xyxy input pixels, labels
            Tensor[M] int64)``, or None for a frame without ground truth (no loss).

    Returns:
        dict: ``"cls"`` (quality focal), ``"box"`` (distribution focal),
        ``"giou"`` and ``"total"`` (weighted as NanoDet-g), each normalised by
        the number of positive cells (at least 1); zeros with a graph when no
        frame has targets.
    """
    scores, dists = output.cls_scores, output.box_dists
    device = scores.device
    centers, strides = cell_centers(output.level_shapes, output.strides, device)
    level_sizes = [h * w for h, w in output.level_shapes]
    pred_boxes = distances_to_boxes(dists, centers, strides)
    bins = dists.shape[-1] // 4
    cls_sum = scores.sum() * 0.0
    box_sum, giou_sum, weight_sum, positives = cls_sum.clone(), cls_sum.clone(), cls_sum.new_zeros(()), 0
    for b, target in enumerate(targets):
        if target is None:
            continue
        boxes, labels = target[0].to(device, torch.float32), target[1].to(device)
        assigned = atss_assign(boxes, centers, strides, level_sizes)
        pos = torch.nonzero(assigned >= 0).flatten()
        soft = torch.zeros_like(scores[b])
        if len(pos):
            gt = boxes[assigned[pos]]
            iou, giou = paired_iou(pred_boxes[b, pos], gt)
            soft[pos, labels[assigned[pos]]] = iou.detach()
            weight = scores[b, pos].detach().amax(dim=1)
            # distances to the box sides in strides, clipped inside the bin range
            c, s = centers[pos], strides[pos, None]
            sides = torch.cat((c - gt[:, :2], gt[:, 2:] - c), dim=1) / s
            sides = sides.clamp(0, bins - 1 - 0.01)
            left = sides.floor().long()
            w_left = left + 1 - sides
            logits = dists[b, pos].reshape(-1, 4, bins)
            log_p = F.log_softmax(logits, dim=-1)
            dfl = -(log_p.gather(2, left[..., None])[..., 0] * w_left + log_p.gather(2, (left + 1)[..., None])[..., 0] * (1 - w_left))
            box_sum = box_sum + (dfl.mean(dim=1) * weight).sum()
            giou_sum = giou_sum + ((1 - giou) * weight).sum()
            weight_sum = weight_sum + weight.sum()
            positives += len(pos)
        cls_sum = cls_sum + quality_focal_terms(scores[b], soft).sum()
    norm = max(positives, 1)
    parts = {"cls": cls_sum / norm, "box": box_sum / weight_sum.clamp(min=1e-6), "giou": giou_sum / weight_sum.clamp(min=1e-6)}
    parts["total"] = QFL_WEIGHT * parts["cls"] + DFL_WEIGHT * parts["box"] + GIOU_WEIGHT * parts["giou"]
    return parts


def load_targets(labels: str | Path, videos, classes: tuple[str, ...]) -> list[dict[int, FrameTargets]]:
    """Ground truth for the loaded training ranges, in their (downscaled) pixels.

    Args:
        labels: a CocoVID / COCO JSON or an ImageNet VID folder (``vidtag eval``'s formats).
        videos (list[vidtag.train.data.VideoFrames]): the training ranges; a
            label video is matched by name to the video file's stem (a single
            label video goes with a single training video whatever its name).
        classes: the detector's class names; a label class matches by name
            (case-insensitive) or through ``vidtag.eval.classmap.COCO_TO_VID``.

    Returns:
        per training video, ``{frame index within the range: FrameTargets}`` for
        the frames that have ground truth (frames absent from it get no loss).

    Raises:
        ValueError: a training video without labels, or label classes the detector lacks.
    """
    from vidtag.eval.classmap import COCO_TO_VID
    from vidtag.eval.groundtruth import load_groundtruth
    from vidtag.io.decode import probe

    truth = load_groundtruth(labels)
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    lookup.update({vid.lower(): classes.index(coco) for coco, vid in COCO_TO_VID.items() if coco in classes})
    unknown = sorted({c for v in truth.videos.values() for c in v.class_names() if str(c).lower() not in lookup})
    if unknown:
        raise ValueError(f"{labels}: classes the detector does not know: {', '.join(map(str, unknown))}")
    out = []
    for video in videos:
        name = Path(video.path).stem
        match = truth.videos.get(name)
        if match is None and len(truth.videos) == 1 and len(videos) == 1:
            match = next(iter(truth.videos.values()))
        if match is None:
            raise ValueError(f"{labels}: no labelled video named {name!r} (have: {', '.join(sorted(truth.videos)) or 'none'})")
        info = probe(video.path)
        sx, sy = video.frames.shape[2] / info.width, video.frames.shape[1] / info.height
        scale = np.array([sx, sy, sx, sy], np.float32)
        frames = {}
        for index, boxes in match.frames.items():
            if video.start <= index < video.stop:
                labels_ = np.array([lookup[str(c).lower()] for c in boxes.classes], np.int64)
                frames[index - video.start] = FrameTargets(np.asarray(boxes.boxes, np.float32).reshape(-1, 4) * scale, labels_)
        out.append(frames)
    return out
