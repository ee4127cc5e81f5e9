"""Per-box CSV table (``<stem>.tracks.csv``), written and read with pandas.

Columns, in this order::

    video,frame,time_s,track_id,class_id,class_name,score,x1,y1,x2,y2

- ``video`` (str): the video stem.
- ``frame`` (int): frame index from 0 (the COCO ``frame_id``).
- ``time_s`` (float): the frame's presentation time in seconds (1 us).
- ``track_id`` (nullable int): linked track from 1; empty when the box is not
  linked or no linking ran.
- ``class_id`` (int): the **COCO category id** (COCO's official id for the
  80 COCO classes, otherwise the model class index + 1), the same number as
  ``category_id`` in the ``.coco.json`` and ``.mot.json`` files of the same
  run, so the three files join on it.
- ``class_name`` (str): the class name.
- ``score`` (float): confidence, 1e-4.
- ``x1, y1, x2, y2`` (float): box corners in source pixels, top-left origin,
  0.01 px.

One row per box, frames in order, boxes in the order the model gave them.  A
video without boxes gives the header line only.  Plain ``pandas.read_csv``
returns the same values (``track_id`` as float with NaN for empty cells) as
long as the stem and class names do not look like numbers or "NA";
:func:`read_csv` reads every file back to exactly :func:`to_dataframe`'s
table, dtypes included (``track_id`` nullable Int64, names as strings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from vidtag.formats.base import (
    PIXEL_DECIMALS,
    SCORE_DECIMALS,
    TIME_DECIMALS,
    BufferedSink,
    FrameRecord,
    VideoMeta,
    check_frames,
    linked_mask,
)
from vidtag.coco_classes import category_ids

COLUMNS = ("video", "frame", "time_s", "track_id", "class_id", "class_name", "score", "x1", "y1", "x2", "y2")
DTYPES = {
    "video": str,
    "frame": "int64",
    "time_s": "float64",
    "track_id": "Int64",
    "class_id": "int64",
    "class_name": str,
    "score": "float64",
    "x1": "float64",
    "y1": "float64",
    "x2": "float64",
    "y2": "float64",
}


def to_dataframe(meta: VideoMeta, frames: Iterable[FrameRecord]) -> pd.DataFrame:
    """Convert frames to the table described in the module docstring.

    Args:
        meta: the video (name and class list).
        frames: (frame index from 0, timestamp in s, Detections) in increasing
            frame order.

    Returns:
        DataFrame with columns :data:`COLUMNS` and dtypes :data:`DTYPES`.
    """
    frames = [f for f in check_frames(meta, frames) if len(f[2])]
    if frames:
        counts = np.array([len(d) for _, _, d in frames])
        frame_col = np.repeat([f for f, _, _ in frames], counts).astype(np.int64)
        time_col = np.repeat([t for _, t, _ in frames], counts).astype(np.float64)
        boxes = np.concatenate([d.boxes for _, _, d in frames]).astype(np.float64)
        scores = np.concatenate([d.scores for _, _, d in frames]).astype(np.float64)
        labels = np.concatenate([d.labels for _, _, d in frames])
        linked = np.concatenate([linked_mask(d) for _, _, d in frames])
        tracks = np.concatenate(
            [d.track_ids if d.track_ids is not None else np.zeros(len(d), np.int64) for _, _, d in frames]
        )
    else:
        frame_col = np.zeros(0, np.int64)
        time_col = np.zeros(0, np.float64)
        boxes = np.zeros((0, 4), np.float64)
        scores = np.zeros(0, np.float64)
        labels = np.zeros(0, np.int64)
        linked = np.zeros(0, bool)
        tracks = np.zeros(0, np.int64)
    classes = np.array(meta.classes, dtype=object)
    boxes = np.round(boxes, PIXEL_DECIMALS) + 0.0
    df = pd.DataFrame(
        {
            "video": pd.Series([meta.name] * len(labels), dtype=str),
            "frame": frame_col,
            "time_s": np.round(time_col, TIME_DECIMALS) + 0.0,
            "track_id": pd.array(np.where(linked, tracks, 0), dtype="Int64"),
            "class_id": np.asarray(category_ids(meta.classes), dtype=np.int64)[labels],
            "class_name": pd.Series(classes[labels] if len(labels) else [], dtype=str),
            "score": np.round(scores, SCORE_DECIMALS) + 0.0,
            "x1": boxes[:, 0],
            "y1": boxes[:, 1],
            "x2": boxes[:, 2],
            "y2": boxes[:, 3],
        },
        columns=list(COLUMNS),
    )
    df.loc[~linked, "track_id"] = pd.NA
    return df


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV text (no index; empty cell for a missing track)."""
    return df.to_csv(index=False, lineterminator="\n").encode("utf-8")


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a ``.tracks.csv`` file with the dtypes of :data:`DTYPES`."""
    return pd.read_csv(path, dtype=DTYPES, keep_default_na=False, na_values={"track_id": [""]})


class CsvSink(BufferedSink):
    """Writes ``<stem>.tracks.csv`` on close."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return to_csv_bytes(to_dataframe(meta, frames))
