"""MOTChallenge tracking results: the text file and the TAO-style JSON.

``<stem>.mot.txt``: one line per linked box, sorted by frame then id::

    frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

``frame`` is the frame index + 1 and ``id`` the track id (both from 1); boxes
in source pixels, top-left origin, rounded to 0.01 px; ``conf`` rounded to
1e-4.  Columns 8-10 stay -1: TrackEval reads column 8 as a class and rejects
MOT17 results with values above 1, so the class lives in the JSON and CSV
outputs instead.  Boxes without a track id are not written, and an id never
appears twice in one frame (TrackEval rejects that).

``<stem>.mot.json``: a JSON array, one item per linked box, sorted by frame
then track::

    {video_id: 1, image_id, frame_id, track_id, category_id, category,
     bbox: [x, y, w, h], score}

``image_id`` / ``category_id`` are the ids of the COCO file (frame index + 1;
:func:`vidtag.coco_classes.category_ids`), ``frame_id`` the frame index from 0, ``category`` the class
name.  The array is also a COCO results list (``COCO.loadRes``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from vidtag.formats.base import (
    PIXEL_DECIMALS,
    SCORE_DECIMALS,
    BufferedSink,
    FrameRecord,
    VideoMeta,
    check_frames,
    linked_mask,
    round_float,
    xyxy_to_xywh,
)
from vidtag.coco_classes import category_ids
from vidtag.formats.coco import VIDEO_ID, dumps, image_id


def _linked_boxes(meta: VideoMeta, frames: Iterable[FrameRecord]):
    """Yield (frame_idx, track_id, label, xywh float64[4], score) per linked box,
    by frame then track; raises ValueError on a track id repeated in a frame."""
    for frame_idx, _, dets in check_frames(meta, frames):
        keep = linked_mask(dets)
        if not keep.any():
            continue
        tracks = dets.track_ids[keep]
        if len(np.unique(tracks)) != len(tracks):
            raise ValueError(f"frame {frame_idx}: a track id occurs twice ({sorted(tracks.tolist())})")
        xywh = xyxy_to_xywh(dets.boxes[keep])
        labels = dets.labels[keep]
        scores = dets.scores[keep]
        for i in np.argsort(tracks, kind="stable"):
            yield frame_idx, int(tracks[i]), int(labels[i]), xywh[i], scores[i]


def to_mot_lines(meta: VideoMeta, frames: Iterable[FrameRecord]) -> list[str]:
    """Convert frames to MOTChallenge lines (without newline); see the module docstring.

    Args:
        meta: the video (class list used for validation only).
        frames: (frame index from 0, timestamp in s, Detections) in increasing
            frame order.  Only boxes with a track id >= 1 are written.
    """
    lines = []
    for frame_idx, track, _, xywh, score in _linked_boxes(meta, frames):
        box = ",".join(repr(round_float(v, PIXEL_DECIMALS)) for v in xywh)
        lines.append(f"{frame_idx + 1},{track},{box},{repr(round_float(score, SCORE_DECIMALS))},-1,-1,-1")
    return lines


def to_mot_json(meta: VideoMeta, frames: Iterable[FrameRecord]) -> list[dict]:
    """Convert frames to the TAO-style result list; see the module docstring."""
    out = []
    ids = category_ids(meta.classes)
    for frame_idx, track, label, xywh, score in _linked_boxes(meta, frames):
        out.append(
            {
                "video_id": VIDEO_ID,
                "image_id": image_id(frame_idx),
                "frame_id": int(frame_idx),
                "track_id": track,
                "category_id": ids[label],
                "category": meta.classes[label],
                "bbox": [round_float(v, PIXEL_DECIMALS) for v in xywh],
                "score": round_float(score, SCORE_DECIMALS),
            }
        )
    return out


class MotSink(BufferedSink):
    """Writes ``<stem>.mot.txt`` on close (empty file when nothing is linked)."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        lines = to_mot_lines(meta, frames)
        return "".join(line + "\n" for line in lines).encode("ascii")


class MotJsonSink(BufferedSink):
    """Writes ``<stem>.mot.json`` on close (``[]`` when nothing is linked)."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return dumps(to_mot_json(meta, frames))
