"""``--vid-stride K``: detect every K-th frame, carry the boxes over the frames between.

The cheapest way to run a per-frame detector faster (ultralytics calls it
``vid_stride``), and the baseline every temporal speed-up must beat at the
same speed.  Frames ``0, K, 2K, ...`` are *detected*; every other frame is
*held*: it gets a copy of the last detected frame's boxes.  After linking,
:func:`interpolate_held` replaces a held box by the straight line between its
track's boxes on the detected frames before and after it, where the track
has both; otherwise the box stays held.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from vidtag.types import Detections


def is_detected(t: int, stride: int) -> bool:
    """Whether frame t is one the network runs on."""
    return t % stride == 0


def interpolate_held(frames: Sequence[Detections], stride: int, shot_starts: Sequence[int] = ()) -> list[Detections]:
    """Interpolate linked tracks over the held frames.

    Args:
        frames: one linked :class:`Detections` per frame (boxes float32[N, 4]
            xyxy pixels, ``track_ids`` set), where frame ``t`` with
            ``t % stride != 0`` holds copies of the boxes of frame
            ``a = t - t % stride``.
        stride: K >= 1.
        shot_starts: frames that start a new shot; a held frame is never
            interpolated towards a detected frame of another shot.

    Returns:
        The frames, where each held box whose track also has a box on the next
        detected frame ``b = a + stride`` (same shot, inside the video) is
        ``(1 - u) * box_a + u * box_b`` with ``u = (t - a) / stride``; its
        score and label are unchanged.  Other boxes are returned as they came.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    out = list(frames)
    if stride == 1:
        return out
    starts = sorted(shot_starts)
    for t, dets in enumerate(frames):
        a = t - t % stride
        b = a + stride
        if t == a or b >= len(frames) or not len(dets) or dets.track_ids is None:
            continue
        if bisect.bisect_right(starts, a) != bisect.bisect_right(starts, b):
            continue  # a cut between the two detected frames
        end = frames[b]
        if end.track_ids is None or not len(end):
            continue
        at_end = {int(k): i for i, k in enumerate(end.track_ids)}
        u = (t - a) / stride
        boxes = dets.boxes.copy()
        for i, k in enumerate(dets.track_ids):
            j = at_end.get(int(k))
            if j is not None:
                start_box = _box_of_track(frames[a], int(k))
                if start_box is not None:
                    boxes[i] = (1 - u) * start_box + u * end.boxes[j]
        out[t] = Detections(boxes.astype(np.float32), dets.scores, dets.labels, dets.track_ids)
    return out


def _box_of_track(dets: Detections, track: int) -> np.ndarray | None:
    if dets.track_ids is None:
        return None
    hits = np.flatnonzero(dets.track_ids == track)
    return dets.boxes[hits[0]].astype(np.float64) if len(hits) else None
