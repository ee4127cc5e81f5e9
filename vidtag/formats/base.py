"""What every output sink shares: video metadata, atomic files, frame checks.

A sink receives the frames of one video in order and completes one file at
``path`` on :meth:`Sink.close`.  The file is written under a temporary name in
the same folder and renamed into place, so a reader never sees half a file and
an aborted run leaves nothing at ``path``.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from vidtag.errors import OutputError
from vidtag.types import Detections

FORMATS = ("coco", "mot", "mot-json", "csv", "mp4", "cvat", "labelstudio")
DEFAULT_FORMATS = ("coco", "mot", "mot-json", "csv", "mp4")
"""What ``vidtag detect`` writes when no ``--format`` is given."""
SIDECARS = {"coco": "coco-results"}
"""Files written with a format, never asked for alone: beside the COCO dataset, its
annotations as a results list (``COCO.loadRes``)."""
SUFFIXES = {
    "coco": ".coco.json",
    "coco-results": ".coco-results.json",
    "mot": ".mot.txt",
    "mot-json": ".mot.json",
    "csv": ".tracks.csv",
    "mp4": ".annotated.mp4",
    "cvat": ".cvat.xml",
    "labelstudio": ".labelstudio.json",
}

# Rounding of numbers written to text formats: pixels to 1/100 px, scores to
# 1e-4, times to 1 us.  Finer digits are noise from float32 and only grow files.
PIXEL_DECIMALS = 2
SCORE_DECIMALS = 4
TIME_DECIMALS = 6

FrameRecord = tuple[int, float, Detections]
"""One frame as sinks see it: (frame index from 0, presentation time in s, boxes)."""


@dataclass(frozen=True)
class VideoMeta:
    """What every sink needs to know about the video it annotates.

    Attributes:
        name: video stem; used in COCO ``file_name`` and the CSV ``video`` column.
        width, height: frame size in pixels (after rotation metadata).
        fps: average frame rate.
        num_frames: number of frames (frame indices are 0..num_frames-1).
        classes: the model's class names; ``Detections.labels`` index into it.
        info: free-form, JSON-serialisable record copied to COCO ``info``
            (tool version, method, weights name + sha256, options).
        source: the source video's file name ("" when unknown); Label Studio's
            task points at it.
    """

    name: str
    width: int
    height: int
    fps: float
    num_frames: int
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"VideoMeta: frame size must be positive, got {self.width}x{self.height}")
        if self.num_frames < 0:
            raise ValueError(f"VideoMeta: num_frames must be >= 0, got {self.num_frames}")


def round_float(value, decimals: int) -> float:
    """A plain Python float rounded to ``decimals``; raises on NaN or infinity."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write a non-finite number ({value}) to an output file")
    return round(value, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """boxes (float[N, 4]) x1, y1, x2, y2 -> float[N, 4] x, y (top-left), w, h."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """boxes (float[N, 4]) x, y (top-left), w, h -> float[N, 4] x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def check_frames(meta: VideoMeta, frames: Iterable[FrameRecord]) -> list[FrameRecord]:
    """Validate frame records for the converters and return them as a list.

    Frame indices must be >= 0 and strictly increasing; labels must index
    ``meta.classes``; boxes and scores must be finite.
    """
    frames = list(frames)
    last = -1
    num_classes = len(meta.classes)
    for frame_idx, _, dets in frames:
        if frame_idx <= last:
            raise ValueError(f"frames must be in increasing order: frame {frame_idx} after frame {last}")
        last = frame_idx
        if len(dets) == 0:
            continue
        if dets.labels.min() < 0 or dets.labels.max() >= num_classes:
            raise ValueError(
                f"frame {frame_idx}: label {int(dets.labels.max())} outside the {num_classes} classes"
            )
        if not (np.isfinite(dets.boxes).all() and np.isfinite(dets.scores).all()):
            raise ValueError(f"frame {frame_idx}: non-finite box or score")
    return frames


def linked_mask(dets: Detections) -> np.ndarray:
    """bool[N]: boxes that carry a track id (linking ran and id >= 1)."""
    if dets.track_ids is None:
        return np.zeros(len(dets), dtype=bool)
    return dets.track_ids >= 1


class AtomicFile:
    """A temporary file next to ``path`` that becomes ``path`` on :meth:`commit`.

    The temporary name is ``.<name>.<random>.tmp<suffix>`` in the same folder
    (same file system, so :func:`os.replace` is atomic), created with mode
    0o666 minus the umask like any ordinary new file.  OS errors are raised as
    :class:`vidtag.errors.OutputError` naming ``path``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        suffix = self.path.suffix
        for _ in range(100):
            tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp{suffix}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as err:
                raise OutputError(f"{self.path}: cannot write: {err.strerror or err}") from err
            os.close(fd)
            self.tmp: Path | None = tmp
            return
        raise OutputError(f"{self.path}: cannot find a free temporary name")  # pragma: no cover

    def write_bytes(self, data: bytes) -> None:
        """Write the whole content to the temporary file."""
        try:
            with open(self.tmp, "wb") as f:
                f.write(data)
        except OSError as err:
            self.discard()
            raise OutputError(f"{self.path}: cannot write: {err.strerror or err}") from err

    def commit(self) -> None:
        """Rename the temporary file to ``path`` (replacing any old file)."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.discard()
            raise OutputError(f"{self.path}: cannot write: {err.strerror or err}") from err
        self.tmp = None

    def discard(self) -> None:
        """Remove the temporary file if it is still there."""
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None


class Sink:
    """Writes the annotations of one video to one file; a context manager.

    Call :meth:`write` once per frame, in order (frame indices 0..N-1, each
    once, possibly with empty :class:`Detections`), then :meth:`close` to
    complete the file at ``path``, or :meth:`abort` to leave nothing there.
    Used as ``with open_sink(...) as sink:`` the file is completed when the
    block ends normally and aborted when it raises.

    Attributes:
        path: the file completed on close.
        meta: the video's metadata.
        needs_frames: whether :meth:`write` needs the decoded frame (only the
            annotated-video sink does).
    """

    needs_frames = False

    def __init__(self, path: str | Path, meta: VideoMeta):
        self.path = Path(path)
        self.meta = meta
        self._last_frame = -1
        self._closed = False

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_write(self, frame_idx: int) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: write after close or abort")
        if frame_idx <= self._last_frame:
            raise ValueError(f"{self.path}: frame {frame_idx} written after frame {self._last_frame}")
        self._last_frame = frame_idx

    def write(self, frame_idx: int, timestamp_s: float, dets: Detections, frame: np.ndarray | None = None) -> None:
        """Add one frame's boxes; ``frame`` (uint8 [H, W, 3] RGB) only if ``needs_frames``."""
        raise NotImplementedError

    def close(self) -> None:
        """Complete the file at ``path``.  Idempotent."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove the temporary file; nothing is left at ``path``.  Idempotent."""
        raise NotImplementedError


class BufferedSink(Sink):
    """A sink that keeps the frames in memory and converts them on close.

    Subclasses implement :meth:`render`, a call to their pure converter that
    returns the file's bytes.  The temporary file is created on construction,
    so an unwritable folder fails before any frame is processed.

    ``meta.num_frames`` in the written file is the number of frames actually
    written (``last frame index + 1``), which is what the file then describes.
    """

    def __init__(self, path: str | Path, meta: VideoMeta):
        super().__init__(path, meta)
        self._file = AtomicFile(self.path)
        self._frames: list[FrameRecord] = []

    def write(self, frame_idx: int, timestamp_s: float, dets: Detections, frame: np.ndarray | None = None) -> None:
        self._check_write(frame_idx)
        self._frames.append((int(frame_idx), float(timestamp_s), dets))

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            meta = self.meta
            if meta.num_frames != self._last_frame + 1:
                meta = replace(meta, num_frames=self._last_frame + 1)
            data = self.render(meta, self._frames)
        except BaseException:
            self._file.discard()
            raise
        self._file.write_bytes(data)
        self._file.commit()
        self._frames = []

    def abort(self) -> None:
        self._closed = True
        self._file.discard()
        self._frames = []

