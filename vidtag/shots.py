"""Hard cuts (shot boundaries) from small grey thumbnails of the frames.

A key-frame method must not carry features across a cut: the frames after it
show another scene, and features propagated from before it put the old
scene's objects on them.  A cut shows as a low normalised cross-correlation
(NCC) between the thumbnails of two consecutive frames; being zero-mean and
unit-norm, the NCC ignores brightness and contrast changes, and the 32x18
thumbnail averages away noise, blur and compression artefacts.

On the development footage, consecutive frames of one shot correlate far
above the real cuts, and a degraded frame (an occluder appearing, blur,
noise) stays well above them too; the default threshold of 0.4 sits between
the two.
"""

from __future__ import annotations

import bisect

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtag.ops.letterbox import plan_letterbox

THUMBNAIL_SIZE = (18, 32)  # (rows, columns)
CUT_THRESHOLD = 0.4


def thumbnails(frames: Tensor) -> Tensor:
    """frames (Tensor[B, C, H, W], float) -> Tensor[B, 576] float32: the channel mean
    average-pooled to 18x32 cells, minus its mean, divided by its norm (a flat
    frame gives all zeros)."""
    grey = F.adaptive_avg_pool2d(frames.float(), THUMBNAIL_SIZE).mean(dim=1).flatten(1)
    grey = grey - grey.mean(dim=1, keepdim=True)
    return grey / grey.norm(dim=1, keepdim=True).clamp(min=1e-6)


def frame_thumbnails(x: Tensor, box, imgsz: int) -> Tensor:
    """:func:`thumbnails` of letterboxed frames (Tensor[B, 3, H, W] from ``preprocess.letterbox``
    at ``imgsz`` with ``box``), the padding cropped off: Tensor[B, 576]."""
    _, (width, height) = plan_letterbox(box.source, imgsz)
    return thumbnails(x[:, :, box.pad_y : box.pad_y + height, box.pad_x : box.pad_x + width])


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


class ShotBoundaries:
    """The hard cuts of one video, found chunk by chunk from letterboxed network inputs.

    Args:
        threshold: as in :func:`cuts`; 0 finds none and computes nothing.
        imgsz: the letterbox size the inputs were made with (to crop the padding).

    Attributes:
        starts (list[int]): frames of the video found to start a new shot, ascending.
    """

    def __init__(self, threshold: float, imgsz: int):
        self.threshold = threshold
        self.imgsz = imgsz
        self.starts: list[int] = []
        self._frames = 0  # frames seen so far
        self._last: Tensor | None = None  # thumbnail of the last frame seen
        self.last_thumbs: Tensor | None = None  # Tensor[B, 576]: thumbnails of the last push (None when off)

    def push(self, x: Tensor, box) -> list[int]:
        """x (Tensor[B, 3, H, W]) the next B frames as from ``preprocess.letterbox``
        with ``box`` -> the indices into x (0..B-1) that start a new shot."""
        if self.threshold == 0:
            return self.skip(len(x))
        return self.push_thumbnails(frame_thumbnails(x, box, self.imgsz))

    def skip(self, count: int) -> list[int]:
        """The next ``count`` frames, with cut detection off (threshold 0): counted, no cut -> []."""
        if self.threshold != 0:
            raise ValueError("frames can be skipped only with cut detection off (threshold 0)")
        self._frames += count
        return []

    def push_thumbnails(self, thumbs: Tensor) -> list[int]:
        """:meth:`push` for frames whose :func:`thumbnails` (Tensor[B, 576]) are made
        already -> the indices (0..B-1) that start a new shot."""
        if self.threshold == 0:
            return self.skip(len(thumbs))
        first, self._frames = self._frames, self._frames + len(thumbs)
        self.last_thumbs = thumbs
        found = cuts(thumbs, self._last, self.threshold)
        self._last = thumbs[-1]
        self.starts.extend(first + i for i in found)
        return found

    def shot_of(self, t: int, num_frames: int) -> tuple[int, int]:
        """(first, end) of frame t's shot among the first ``num_frames`` frames: ``first <= t < end``."""
        i = bisect.bisect_right(self.starts, t)
        first = self.starts[i - 1] if i else 0
        end = self.starts[i] if i < len(self.starts) else num_frames
        return first, min(end, num_frames)
