"""Box drawing and the annotated-video sink (``<stem>.annotated.mp4``).

:func:`draw_detections` draws one frame's boxes with OpenCV: a rectangle per
box and a filled label ``"<class> <score> #<track>"`` above it (inside the box
when there is no room above), kept inside the frame.  The colour is stable per
track id (and per class for boxes without a track); line thickness and font
size scale with the frame size.

:class:`VideoSink` draws every frame and hands it to
:class:`vidtag.io.encode.VideoEncoder` (H.264, yuv420p, +faststart, source
audio copied), writing to a temporary name that is renamed on close.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from vidtag.formats.base import AtomicFile, Sink, VideoMeta
from vidtag.types import Detections

PALETTE_SIZE = 32
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _make_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    # Hues stepped by the golden ratio: any run of consecutive indices gets
    # well-separated hues; saturation/value alternate to split close hues.
    colours = []
    for i in range(n):
        hue = (i * 0.6180339887) % 1.0
        sat = 0.85 if i % 2 == 0 else 0.6
        val = 0.95 if i % 3 != 2 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


PALETTE = _make_palette(PALETTE_SIZE)
"""RGB colours (uint8 values) boxes are drawn with."""


def track_color(track_id: int) -> tuple[int, int, int]:
    """RGB colour of a track: the same id always gets the same colour."""
    return PALETTE[int(track_id) % PALETTE_SIZE]


def class_color(label: int) -> tuple[int, int, int]:
    """RGB colour of an unlinked box of class ``label`` (0-based)."""
    # Odd stride from the other end of the palette, so class colours are not
    # those of the first track ids.
    return PALETTE[(PALETTE_SIZE - 1 - 5 * int(label)) % PALETTE_SIZE]


@lru_cache(maxsize=16)
def drawing_style(width: int, height: int) -> tuple[int, float, int, int]:
    """(box line thickness, font scale, text thickness, label padding) for a frame size.

    Scales with sqrt(width * height): 2 px lines and 0.5 font at 640x360,
    5 px and 1.2 at 1920x1080.
    """
    size = math.sqrt(width * height)
    thickness = max(1, round(size / 300))
    font_scale = max(0.35, size / 1200)
    text_thickness = max(1, round(font_scale * 1.5))
    pad = max(1, round(size / 400))
    return thickness, font_scale, text_thickness, pad


@dataclass(frozen=True)
class DrawStyle:
    """How boxes are drawn on the annotated video.

    Attributes:
        line_width: box line thickness in pixels; None scales it with the frame size.
        labels: draw the ``class score #track`` label above each box.
        conf: include the score in the label.
    """

    line_width: int | None = None
    labels: bool = True
    conf: bool = True

    def __post_init__(self):
        if self.line_width is not None and self.line_width < 1:
            raise ValueError(f"line width must be at least 1 pixel, got {self.line_width}")


def label_text(class_name: str, score: float, track_id: int | None, conf: bool = True) -> str:
    """``"<class> <score:.2f> #<track>"``, without ``#<track>`` for unlinked boxes
    and without the score when ``conf`` is False."""
    text = f"{class_name} {score:.2f}" if conf else class_name
    if track_id is not None and track_id >= 1:
        text += f" #{track_id}"
    return text


def draw_detections(frame: np.ndarray, dets: Detections, classes: Sequence[str], style: DrawStyle = DrawStyle()) -> np.ndarray:
    """Draw boxes and labels on a copy of ``frame``.

    Args:
        frame (uint8[H, W, 3]): RGB image; not modified.
        dets: boxes in pixels of this frame (xyxy); parts outside the frame are
            clipped, boxes entirely outside are skipped.
        classes: class names indexed by ``dets.labels``.
        style: line width and which parts of the labels to draw.

    Returns:
        uint8[H, W, 3]: a new RGB image with the boxes drawn.  Labels are
        drawn after all rectangles, highest score last (on top).
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"draw_detections: expected uint8[H, W, 3], got {frame.dtype}{list(frame.shape)}")
    image = np.array(frame, dtype=np.uint8, order="C", copy=True)
    if len(dets) == 0:
        return image
    height, width = image.shape[:2]
    thickness, font_scale, text_thickness, pad = drawing_style(width, height)
    if style.line_width is not None:
        thickness = style.line_width

    boxes = dets.boxes
    finite = np.isfinite(boxes).all(axis=1)
    visible = finite & (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0) & (boxes[:, 0] < width) & (boxes[:, 1] < height)
    order = [i for i in np.argsort(dets.scores, kind="stable") if visible[i]]
    if not order:
        return image
    xyxy = np.round(np.nan_to_num(boxes)).astype(np.int64)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height - 1)
    tracks = dets.track_ids

    colors = []
    for i in order:
        track = None if tracks is None or tracks[i] < 1 else int(tracks[i])
        color = track_color(track) if track is not None else class_color(dets.labels[i])
        colors.append((track, color))
        x1, y1, x2, y2 = (int(v) for v in xyxy[i])
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)

    for i, (track, color) in zip(order, colors if style.labels else ()):
        x1, y1 = int(xyxy[i, 0]), int(xyxy[i, 1])
        text = label_text(classes[dets.labels[i]], float(dets.scores[i]), track, style.conf)
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, text_thickness)
        label_w = text_w + 2 * pad
        label_h = text_h + baseline + 2 * pad
        top = y1 - label_h if y1 - label_h >= 0 else y1
        top = max(0, min(top, height - label_h))
        left = max(0, min(x1, width - label_w))
        cv2.rectangle(image, (left, top), (left + label_w - 1, top + label_h - 1), color, cv2.FILLED)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luma > 140 else (255, 255, 255)
        cv2.putText(
            image, text, (left + pad, top + pad + text_h), FONT, font_scale, text_color, text_thickness, cv2.LINE_AA
        )
    return image


class VideoSink(Sink):
    """Writes ``<stem>.annotated.mp4``: every frame with its boxes drawn.

    Args:
        path: the output file (``.mp4``).
        meta: size and fps of the source; frames must be uint8[height, width, 3] RGB.
        timestamps (float[num_frames] | None): presentation time of each frame
            in seconds; when given it is used instead of ``write``'s
            ``timestamp_s`` (``vidtag render`` passes the COCO file's times).
        audio_source: a video whose audio stream is copied, or None.
        encoder_factory: builds the encoder as
            ``factory(path, width, height, fps, audio_source=..., crf=..., preset=...)``;
            it returns an object with ``write(frame, pts_s)``, ``close()``,
            ``abort()`` (and optionally ``__enter__``).  Default
            :class:`vidtag.io.encode.BackgroundEncoder` (x264 in its own
            thread, so drawing and encoding overlap).
        crf, preset: x264 quality and speed.  ``ultrafast`` writes more
            bytes than ``veryfast`` in less time: the annotated video is a
            preview and its encoding competes with inference for the CPU, so
            speed wins (``benchmarks/bench_encode.py`` prints both).
        style: how boxes are drawn (:class:`DrawStyle`).
    """

    needs_frames = True
    DEFAULT_PRESET = "ultrafast"

    def __init__(
        self,
        path: str | Path,
        meta: VideoMeta,
        timestamps: Sequence[float] | None = None,
        *,
        audio_source: str | Path | None = None,
        encoder_factory: Callable | None = None,
        crf: int = 23,
        preset: str = DEFAULT_PRESET,
        style: DrawStyle = DrawStyle(),
    ):
        super().__init__(path, meta)
        self.style = style
        self.timestamps = None if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        if encoder_factory is None:
            from vidtag.io.encode import BackgroundEncoder

            encoder_factory = BackgroundEncoder
        self._file = AtomicFile(self.path)
        try:
            encoder = encoder_factory(
                self._file.tmp, meta.width, meta.height, meta.fps, audio_source=audio_source, crf=crf, preset=preset
            )
            enter = getattr(encoder, "__enter__", None)
            self._encoder = enter() if enter is not None else encoder
        except BaseException:
            self._file.discard()
            raise

    def write(self, frame_idx: int, timestamp_s: float, dets: Detections, frame: np.ndarray | None = None) -> None:
        """Draw ``dets`` on ``frame`` (uint8[H, W, 3] RGB) and encode it at its pts."""
        if frame is None:
            raise ValueError(f"{self.path}: the annotated video needs the decoded frame")
        frame = np.asarray(frame)
        if frame.shape != (self.meta.height, self.meta.width, 3):
            raise ValueError(
                f"{self.path}: frame {frame_idx} is {list(frame.shape)}, "
                f"expected [{self.meta.height}, {self.meta.width}, 3]"
            )
        self._check_write(frame_idx)
        pts = float(self.timestamps[frame_idx]) if self.timestamps is not None else float(timestamp_s)
        self._encoder.write(draw_detections(frame, dets, self.meta.classes, self.style), pts)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._encoder.close()
        except BaseException:
            try:
                self._encoder.abort()
            except Exception:  # the close error is the one to report
                pass
            self._file.discard()
            raise
        self._file.commit()

    def abort(self) -> None:
        if self._closed and self._file.tmp is None:
            return
        self._closed = True
        try:
            self._encoder.abort()
        finally:
            self._file.discard()
