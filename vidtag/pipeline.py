"""One video: decode -> model -> link -> write.

Decoding runs in a background thread ahead of the model; the annotated video
is drawn and encoded in a second pass once linking has assigned track ids
(Seq-NMS needs the whole video before any track is final).  All outputs of a
video are written into a staging folder and moved into place only when every
one of them is complete, so a reader never sees a half-written file and a
failed video leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vidtag.errors import OutputError, VideoError
from vidtag.types import Detections, VideoInfo

log = logging.getLogger(__name__)

STAGING_DIR = ".vidtag-staging"
"""Folder in the output folder where a video's outputs are written before they
are moved into place (:func:`write_outputs`); the batch layer cleans up what a
killed run left there."""

ProgressFn = Callable[[str, int, int], None]
"""on_progress(stage, done, total): stage is 'detect' or 'render'."""

FRAME_CACHE_BYTES = 256 << 20
"""Videos whose decoded frames fit in this many bytes keep them for the
render pass instead of decoding twice; longer videos are streamed again, so
memory never grows with video length."""

DECODE_CHUNK_BYTES = 128 << 20
"""Most bytes of decoded frames in one chunk: very large frames get smaller
chunks than ``--batch`` so memory stays bounded."""

RENDER_CHUNK_BYTES = 8 << 20
"""Most bytes of full-size frames in one chunk of the render pass (which only
draws and encodes them one by one): 2 frames of 720p, 1 of 4K."""


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
    first_frame: int = 0
    """Index in the video of ``detections[0]`` (``--start``); the frames are consecutive."""
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
    span=None,
) -> VideoDetections:
    """Decode ``path`` in chunks of ``batch`` frames, detect, then link.

    A whole video decoded on the CPU is decoded straight to the network's
    input size (``iter_chunks(size=)``); otherwise (a span, a rotated video,
    decoding on CUDA, or a detector without ``options``) frames come at full
    size, and with ``keep_frames`` a video whose frames fit in
    FRAME_CACHE_BYTES keeps them in ``result.frames`` for the render pass.  With ``span``
    (:class:`vidtag.io.decode.Span`) only its frames are decoded and detected.

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
    first_frame: list[int] = []
    frame_bytes = info.width * info.height * 3
    # whole videos on the CPU decode straight to the network's size (nothing else reads the
    # frames: the annotated MP4 decodes again), so every format comes from the same boxes
    options = getattr(detector, "options", None)
    scaled = options is not None and decode_device == "cpu" and span is None and not info.rotation
    fits = frame_bytes * info.num_frames <= FRAME_CACHE_BYTES
    cache: list | None = [] if keep_frames and fits and decode_device == "cpu" and not scaled else None
    size = None
    if scaled:
        from vidtag.ops.letterbox import plan_letterbox

        size = plan_letterbox((info.width, info.height), options.imgsz)[1]  # the network input without its padding

    def recorded(chunks):
        for chunk in chunks:
            if not first_frame:
                first_frame.append(chunk.start)
            timestamps.append(np.asarray(chunk.timestamps, dtype=np.float64))
            if cache is not None:
                cache.append(chunk)
            yield chunk

    chunk_size = max(1, min(batch, DECODE_CHUNK_BYTES // max(frame_bytes, 1)))
    chunks = prefetch(iter_chunks(path, chunk_size=chunk_size, device=decode_device, info=info, span=span, size=size),
                      depth=2, name="decode")
    total = info.num_frames
    try:
        for dets in detector.run(recorded(chunks)):
            detections.append(dets)
            if on_progress is not None:
                on_progress("detect", len(detections), total if span is None else max(len(detections), 1))
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
        first_frame=first_frame[0] if first_frame else 0,
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
    from vidtag.formats import SIDECARS, SUFFIXES, VideoMeta, open_sink

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
        source=Path(result.info.path).name,
    )
    staged: dict[str, Path] = {}
    try:
        for fmt in [*formats, *(SIDECARS[f] for f in formats if f in SIDECARS)]:
            staged[fmt] = staging / f"{stem}{SUFFIXES[fmt]}"
            try:
                if fmt == "mp4":
                    render_video(result.info, result.detections, result.timestamps, meta, staged[fmt],
                                 batch=batch, on_progress=on_progress, frames=result.frames, style=style,
                                 first_frame=result.first_frame)
                else:
                    with open_sink(fmt, staged[fmt], meta) as sink:
                        for k, dets in enumerate(result.detections):  # frame numbers stay the video's (--start)
                            sink.write(result.first_frame + k, float(result.timestamps[k]), dets)
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
    first_frame: int = 0,
) -> None:
    """Draw ``detections`` on the video's frames and encode H.264 to ``path``.

    ``detections[k]`` and ``timestamps[k]`` belong to frame ``first_frame + k``
    of the video.  The frames come from ``frames`` (chunks kept by
    :func:`detect_video`) when given, else ``info.path`` is decoded again.
    Frames outside the detections are not written.  The whole video keeps
    its timing and audio; a part of it (``first_frame > 0`` or fewer frames)
    starts at time 0 and has no audio.
    """
    from vidtag.formats import open_sink
    from vidtag.io.decode import Span, iter_chunks
    from vidtag.io.prefetch import prefetch

    total = len(detections)
    whole = first_frame == 0 and total == info.num_frames
    audio = info.path if info.has_audio and whole else None
    shift = 0.0 if whole or not total else float(timestamps[0])
    if frames is not None:
        chunks = iter(frames)
    else:
        span = None if whole else Span((first_frame, "f"), (first_frame + total, "f"))
        chunk_size = max(1, min(batch, RENDER_CHUNK_BYTES // max(info.width * info.height * 3, 1)))
        chunks = prefetch(iter_chunks(info.path, chunk_size=chunk_size, device="cpu", info=info, span=span), depth=1,
                          name="render-decode")
    try:
        with open_sink("mp4", path, meta, audio_source=audio, **({"style": style} if style is not None else {})) as sink:
            done = 0
            for chunk in chunks:
                pixels = chunk.frames.cpu().numpy()
                for k in range(len(chunk)):
                    i = chunk.start + k - first_frame
                    if 0 <= i < total:
                        sink.write(chunk.start + k, float(timestamps[i]) - shift, detections[i], pixels[k])
                        done += 1
                if on_progress is not None:
                    on_progress("render", done, total)
                if chunk.start + len(chunk) - first_frame >= total:
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
        with open(results, encoding="utf-8") as f:
            frame_ids = sorted(int(im["frame_id"]) for im in json.load(f)["images"])
    except FileNotFoundError:
        raise VideoError(results, "file not found") from None
    except (ValueError, KeyError, TypeError) as err:
        raise VideoError(results, f"not a vidtag COCO file ({err})") from None
    if (meta.width, meta.height) != (info.width, info.height):
        raise VideoError(results, f"results are for {meta.width}x{meta.height} but {video} is {info.width}x{info.height}")
    first = frame_ids[0] if frame_ids else 0
    options = (meta.info or {}).get("options", {}) if isinstance(meta.info, dict) else {}
    part = options.get("start") is not None or options.get("end") is not None  # a run with --start / --end
    if frame_ids != list(range(first, first + len(frame_ids))):
        raise VideoError(results, "its frames are not consecutive: not a vidtag results file of one video")
    if first + len(detections) > info.num_frames or (not part and (first, len(detections)) != (0, info.num_frames)):
        raise VideoError(results, f"results have {len(detections)} frames (from frame {first}) but {video} has "
                                  f"{info.num_frames}: they are not this video's (or not all of it)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output.parent}: cannot write output folder ({err.strerror or err})") from err
    render_video(info, detections, np.asarray(timestamps, dtype=np.float64), meta, output, style=style, first_frame=first)
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
