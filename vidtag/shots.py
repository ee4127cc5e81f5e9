"""Hard cuts (shot boundaries) from small grey thumbnails of the frames.

A key-frame method must not carry features across a cut: the frames after it
show another scene, and features propagated from before it put the old
scene's objects on them.  A cut shows as a low normalised cross-correlation
(NCC) between the thumbnails of two consecutive frames; being zero-mean and
unit-norm, the NCC ignores brightness and contrast changes, and the 32x18
thumbnail averages away noise, blur and compression artefacts.

Measured on the held-out halves of the development footage (thumbnails of the
letterboxed 416-pixel inputs; ``benchmarks/robustness.py``'s degradation
schedules; issue 4 notes): the three cuts in bikes.mp4 score 0.01, 0.23 and
0.24; consecutive frames of one shot score 0.91 or more in 95 % of cases
(0.99 on vtest.avi) and never below 0.90 when clean, and pairs with a
degraded frame never below 0.62 (an occluder appearing).  Hence the default
threshold of 0.4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

THUMBNAIL_SIZE = (18, 32)  # (rows, columns)
CUT_THRESHOLD = 0.4


def thumbnails(frames: Tensor) -> Tensor:
    """frames (Tensor[B, C, H, W], float) -> Tensor[B, 576] float32: the channel mean
    average-pooled to 18x32 cells, minus its mean, divided by its norm (a flat
    frame gives all zeros)."""
    grey = F.adaptive_avg_pool2d(frames.float(), THUMBNAIL_SIZE).mean(dim=1).flatten(1)
    grey = grey - grey.mean(dim=1, keepdim=True)
    return grey / grey.norm(dim=1, keepdim=True).clamp(min=1e-6)


def cuts(thumbs: Tensor, previous: Tensor | None = None, threshold: float = CUT_THRESHOLD) -> list[int]:
    """Where new shots start.

    Args:
        thumbs (Tensor[B, D]): :func:`thumbnails` of B consecutive frames.
        previous (Tensor[D] | None): the thumbnail of the frame before them,
            None at the start of a video.
        threshold: a frame whose NCC with the frame before is below it starts
            a shot; 0 turns detection off (negative thresholds are refused).

    Returns:
        Ascending indices i in 0..B-1 with a cut between frame i - 1
        (``previous`` for i = 0) and frame i.
    """
    if threshold < 0:
        raise ValueError(f"cut threshold must be >= 0, got {threshold}")
    if threshold == 0:
        return []
    if previous is not None:
        thumbs = torch.cat((previous[None], thumbs))
    ncc = (thumbs[1:] * thumbs[:-1]).sum(dim=1)
    found = torch.nonzero(ncc < threshold).flatten().tolist()
    return [i + (previous is None) for i in found]  # ncc[i] compares rows i and i + 1 of thumbs
