"""One video: decode -> model -> link -> write.

Decoding runs in a background thread ahead of the model; the annotated video
is drawn and encoded in a second pass once linking has assigned track ids
(Seq-NMS needs the whole video before any track is final).  All outputs of a
video are written into a staging folder and moved into place only when every
one of them is complete, so a reader never sees a half-written file and a
failed video leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vidtag.batch import STAGING_DIR
from vidtag.errors import OutputError, VideoError
from vidtag.types import Detections, VideoInfo

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""on_progress(stage, done, total): stage is 'detect' or 'render'."""

FRAME_CACHE_BYTES = 256 << 20
"""Videos whose decoded frames fit in this many bytes keep them for the
render pass instead of decoding twice; longer videos are streamed again, so
memory never grows with video length."""

DECODE_CHUNK_BYTES = 128 << 20
"""Most bytes of decoded frames in one chunk: very large frames get smaller
chunks than ``--batch`` so memory stays bounded."""


@dataclass
class VideoDetections:
    """Everything a model and linker found in one video.

    Attributes:
        info: what the decoder saw.
        detections: one Detections per decoded frame (boxes xyxy source pixels).
        timestamps (float64[T]): presentation time of each frame in seconds.
        classes: class names, index = label.
        seconds: wall time of decode + model + link.
    """

    info: VideoInfo
    detections: list[Detections]
    timestamps: np.ndarray
    classes: tuple[str, ...]
    seconds: float = 0.0
    link: str = "none"
    frames: list | None = None
    """Decoded chunks (uint8 [B, H, W, 3] RGB on the CPU), kept only for short
    videos (see FRAME_CACHE_BYTES) so the render pass need not decode again."""

    @property
    def num_frames(self) -> int:
        return len(self.detections)

    @property
    def fps(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class WrittenOutputs:
    """Final paths of a video's outputs and their sizes in bytes."""

    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def sizes(self) -> dict[str, int]:
        return {fmt: p.stat().st_size for fmt, p in self.paths.items()}


def detect_video(
    path: str | Path,
    detector,
    *,
    link: str = "seqnms+",
    batch: int = 8,
    decode_device: str = "cpu",
    on_progress: ProgressFn | None = None,
    keep_frames: bool = False,
) -> VideoDetections:
    """Decode ``path`` in chunks of ``batch`` frames, detect, then link.

    With ``keep_frames``, a video whose frames fit in FRAME_CACHE_BYTES keeps
    them in ``result.frames`` for the render pass.

    Raises:
        VideoError: the file cannot be decoded (message names file and cause).
    """
    from vidtag.io.decode import iter_chunks, probe
    from vidtag.io.prefetch import prefetch
    from vidtag.linking import link as link_frames

    path = Path(path)
    start = time.perf_counter()
    info = probe(path)
    timestamps: list[np.ndarray] = []
    detections: list[Detections] = []
    frame_bytes = info.width * info.height * 3
    fits = frame_bytes * info.num_frames <= FRAME_CACHE_BYTES
    cache: list | None = [] if keep_frames and fits and decode_device == "cpu" else None

    def recorded(chunks):
        for chunk in chunks:
            timestamps.append(np.asarray(chunk.timestamps, dtype=np.float64))
            if cache is not None:
                cache.append(chunk)
            yield chunk

    chunk_size = max(1, min(batch, DECODE_CHUNK_BYTES // max(frame_bytes, 1)))
    chunks = prefetch(iter_chunks(path, chunk_size=chunk_size, device=decode_device, info=info), depth=2, name="decode")
    try:
        for dets in detector.run(recorded(chunks)):
            detections.append(dets)
            if on_progress is not None:
                on_progress("detect", len(detections), info.num_frames)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if not detections:
        raise VideoError(path, "no decodable frames")
    shot_starts = getattr(detector, "shot_starts", ())
    linked = link_frames(detections, method=link, shot_starts=shot_starts)  # no track crosses a hard cut
    stride = getattr(detector, "vid_stride", 1)
    if stride > 1 and link != "none":
        from vidtag.stride import interpolate_held

        linked = interpolate_held(linked, stride, shot_starts)
    return VideoDetections(
        info=info,
        detections=linked,
        timestamps=np.concatenate(timestamps)[: len(linked)],
        classes=tuple(detector.classes),
        seconds=time.perf_counter() - start,
        link=link,
        frames=cache,
    )


def write_outputs(
    result: VideoDetections,
    formats: Sequence[str],
    out_dir: str | Path,
    stem: str,
    run_info: dict,
    *,
    batch: int = 16,
    on_progress: ProgressFn | None = None,
    style=None,
) -> WrittenOutputs:
    """Write every requested format of one video into ``out_dir`` (``style``: how the
    annotated video draws boxes, a :class:`vidtag.formats.video.DrawStyle`; None: the default).

    Files appear as ``out_dir/<stem><suffix>`` all at once at the end; on any
    error nothing of this video is left in ``out_dir``.
    """
    from vidtag.formats import SUFFIXES, VideoMeta, open_sink

    start = time.perf_counter()
    out_dir = Path(out_dir)
    staging = out_dir / STAGING_DIR / f"{stem}.{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write output folder ({err.strerror or err})") from err
    meta = VideoMeta(
        name=stem,
        width=result.info.width,
        height=result.info.height,
        fps=result.info.fps,
        num_frames=result.num_frames,
        classes=result.classes,
        info=run_info,
    )
    staged: dict[str, Path] = {}
    try:
        for fmt in formats:
            staged[fmt] = staging / f"{stem}{SUFFIXES[fmt]}"
            try:
                if fmt == "mp4":
                    render_video(result.info, result.detections, result.timestamps, meta, staged[fmt],
                                 batch=batch, on_progress=on_progress, frames=result.frames, style=style)
                else:
                    with open_sink(fmt, staged[fmt], meta) as sink:
                        for i, dets in enumerate(result.detections):
                            sink.write(i, float(result.timestamps[i]), dets)
            except (OSError, OutputError, VideoError) as err:
                # a VideoError is the encoder's only when it names a staged file and an OS error lies behind it
                if isinstance(err, VideoError) and (_os_error_in(err) is None or not err.path.startswith(str(staging))):
                    raise
                raise OutputError(f"{out_dir / staged[fmt].name}: cannot write ({_write_cause(err)})") from err
        final = {fmt: out_dir / p.name for fmt, p in staged.items()}
        for fmt, p in staged.items():
            os.replace(p, final[fmt])
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write outputs for {stem} ({err.strerror or err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(out_dir / STAGING_DIR)
    return WrittenOutputs(paths=final, seconds=time.perf_counter() - start)


def render_video(
    info: VideoInfo,
    detections: Sequence[Detections],
    timestamps: np.ndarray,
    meta,
    path: Path,
    *,
    batch: int = 16,
    on_progress: ProgressFn | None = None,
    frames: Sequence | None = None,
    style=None,
) -> None:
    """Draw ``detections`` on the video's frames and encode H.264 to ``path``.

    The frames come from ``frames`` (chunks kept by :func:`detect_video`)
    when given, else ``info.path`` is decoded again.  Frames beyond
    ``len(detections)`` are not written; audio is copied.
    """
    from vidtag.formats import open_sink
    from vidtag.io.decode import iter_chunks
    from vidtag.io.prefetch import prefetch

    audio = info.path if info.has_audio else None
    total = len(detections)
    if frames is not None:
        chunks = iter(frames)
    else:
        chunks = prefetch(iter_chunks(info.path, chunk_size=batch, device="cpu", info=info), depth=2, name="render-decode")
    try:
        with open_sink("mp4", path, meta, audio_source=audio, **({"style": style} if style is not None else {})) as sink:
            for chunk in chunks:
                frames = chunk.frames.cpu().numpy()
                for k in range(min(len(chunk), total - chunk.start)):
                    i = chunk.start + k
                    sink.write(i, float(timestamps[i]), detections[i], frames[k])
                if on_progress is not None:
                    on_progress("render", min(chunk.start + len(chunk), total), total)
                if chunk.start + len(chunk) >= total:
                    break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def render_saved(video: str | Path, results: str | Path, output: str | Path, style=None) -> int:
    """Draw a saved ``.coco.json`` on ``video`` into ``output`` (H.264 MP4; ``style``
    as for :func:`write_outputs`).

    Returns the number of frames written.

    Raises:
        VideoError: the video cannot be read or does not match the results.
    """
    from vidtag.formats.coco import read_coco
    from vidtag.io.decode import probe

    video, results, output = Path(video), Path(results), Path(output)
    info = probe(video)
    try:
        meta, detections, timestamps = read_coco(results)
    except FileNotFoundError:
        raise VideoError(results, "file not found") from None
    except (ValueError, KeyError, TypeError) as err:
        raise VideoError(results, f"not a vidtag COCO file ({err})") from None
    if (meta.width, meta.height) != (info.width, info.height):
        raise VideoError(results, f"results are for {meta.width}x{meta.height} but {video} is {info.width}x{info.height}")
    if len(detections) != info.num_frames:
        raise VideoError(results, f"results have {len(detections)} frames but {video} has {info.num_frames}: "
                                  "they are not this video's (or not all of it)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output.parent}: cannot write output folder ({err.strerror or err})") from err
    render_video(info, detections, np.asarray(timestamps, dtype=np.float64), meta, output, style=style)
    return len(detections)


def _os_error_in(err: BaseException) -> OSError | None:
    """The operating-system error (with an errno) behind ``err``, if any.

    Follows ``__cause__`` and ``__context__``: the encoder and the sinks
    re-raise OS errors as one-line vidtag errors and keep the original there.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def _write_cause(err: BaseException) -> str:
    """Why an output could not be written, in words, without temporary paths."""
    os_error = _os_error_in(err)
    if os_error is not None:
        return os_error.strerror or os.strerror(os_error.errno)
    return getattr(err, "cause", None) or " ".join(str(err).split())


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
