"""Results passed between stages: numpy only, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

METHODS = ("frame", "psla", "iff")
"""Detection methods (``--method``): :class:`VideoDetector` implementations built by
:func:`vidtag.models.build.build_detector`; CLI, API and benchmarks read this tuple."""

LINK_METHODS = ("seqnms+", "seqnms", "none")
"""Linking methods (``--link``), :func:`vidtag.linking.link`."""


@dataclass(frozen=True)
class Detections:
    """The boxes of one frame.

    Attributes:
        boxes (float32[N, 4]): x1, y1, x2, y2 in pixels of the source frame
            (after rotation metadata), origin top-left, x2 >= x1, y2 >= y1.
        scores (float32[N]): confidence in [0, 1].
        labels (int64[N]): class index into the model's class list (0-based).
        track_ids (int64[N] | None): linked track id (from 1) per box, or None
            when no linking ran.  -1 marks a box that linking left unlinked.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray | None = None

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(scores) != n or len(labels) != n:
            raise ValueError(f"Detections: {n} boxes but {len(scores)} scores and {len(labels)} labels")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        if self.track_ids is not None:
            track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if len(track_ids) != n:
                raise ValueError(f"Detections: {n} boxes but {len(track_ids)} track ids")
            object.__setattr__(self, "track_ids", track_ids)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_tracks: bool = False) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64) if with_tracks else None,
        )

    def __getitem__(self, index) -> "Detections":
        """Select boxes with a boolean mask, an index array or a slice."""
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.labels[index],
            None if self.track_ids is None else self.track_ids[index],
        )

    def with_tracks(self, track_ids: np.ndarray, scores: np.ndarray | None = None) -> "Detections":
        """A copy with track ids (and optionally rescored scores)."""
        return Detections(self.boxes, self.scores if scores is None else scores, self.labels, track_ids)


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder sees in a video file.

    ``width`` and ``height`` are the displayed size, after rotation metadata is
    applied.  ``num_frames`` is the count of decodable frames.
    """

    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    codec: str
    rotation: int = 0  # degrees clockwise the frames are turned on display: 0, 90, 180, 270
    has_audio: bool = False
    pixel_format: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive decoded frames of one video.

    Attributes:
        start (int): index of the first frame (0-based).
        frames: uint8 tensor [B, H, W, 3], RGB, rotation applied; a torch tensor
            on the decode device.
        timestamps (float64[B]): presentation time of each frame in seconds.
        source_size ((int, int) | None): the video's (width, height) when the
            decoder scaled ``frames`` down to the network's input size
            (``iter_chunks(size=)``); None when ``frames`` are the video's size.
    """

    start: int
    frames: object
    timestamps: np.ndarray
    source_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.timestamps)


@runtime_checkable
class VideoDetector(Protocol):
    """What the pipeline needs of a detector: one video in, one :class:`Detections` per frame out.

    Implemented by ``vidtag.models.build.FrameDetector`` (``method="frame"``),
    ``vidtag.models.psla.PSLAVideoDetector`` (``"psla"``) and
    ``vidtag.models.iff.IFFVideoDetector`` (``"iff"``).  Each subclasses
    ``vidtag.models.video_detector.VideoDetectorBase`` (the common fields and
    ``shot_starts``); ``build_detector`` makes them from a ``DetectorSettings``.

    Attributes:
        method: one of :data:`METHODS`.
        classes: class names; ``Detections.labels`` index into them.
        options: ``vidtag.models.build.DetectOptions`` (thresholds, input size),
            which the pipeline also reads to decode frames at the network's size.
        shot_starts: after :meth:`run`, the frames that start a new shot (hard
            cuts); linking never joins boxes across them.
    """

    method: str
    classes: tuple[str, ...]
    options: object

    @property
    def shot_starts(self) -> list[int]: ...

    def run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        """Detections for every frame of ``chunks`` (one video, in order), yielded in frame order."""
        ...
