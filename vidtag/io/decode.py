"""Read videos: :func:`probe` the metadata, stream frames with :func:`iter_chunks`.

Backends
--------
* **PyAV** decodes whole videos on the CPU, in the calling thread (FFmpeg's
  own frame threads aside), one chunk at a time: memory is one chunk and
  the decoder's few reference frames, however slowly the chunks are
  consumed.  decord decodes ahead on a thread of its own and keeps what it
  decoded until it is asked for, so behind a detector slower than decoding
  its memory grows with the lead (``benchmarks/bench_e2e.py`` prints the
  peak memory of whole runs).
  PyAV also decodes files whose display matrix rotates them: decord2 3.4
  turns such files itself and gets it wrong (for 90/270 degrees ``next()``
  returns a garbled 4-channel frame and ``get_batch`` fails with "The size
  must exactly match"; for 180 degrees it rotates, which would double-rotate
  with ours).  PyAV returns the coded frames and :func:`iter_chunks` turns
  them with ``torch.rot90``.
* **decord** decodes a part (``--start/--end``: it seeks by its packet
  index) and decodes on the GPU when its build has CUDA: ``get_batch`` over
  consecutive index ranges, handed to torch through decord's native DLPack
  bridge (zero copy).  When decord returns nothing at all for a file it
  opened (seen with short MPEG-TS files with B-frames) PyAV takes over.

Both backends give the same frames and timestamps (a test checks it).
``probe`` counts frames with decord for every file (its count is read from the
container index, without decoding); PyAV fills in the metadata.

Timestamps are presentation times in seconds from the video stream's start
time (decord's convention: an MPEG-TS whose first frame has pts 0.08 s starts
at 0.0).  ``VideoInfo.extra["start_time_s"]`` keeps the offset.

decord and its bundled FFmpeg may print warnings to stderr (for example
``[h264 @ 0x...] Invalid NAL unit size``); they cannot be silenced per call
without changing the process-wide FFmpeg log level, so they are left alone.
Every failure still reaches the caller as a :class:`~vidtag.errors.VideoError`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vidtag.errors import VideoError
from vidtag.types import FrameChunk, VideoInfo

log = logging.getLogger(__name__)

#: Packets :func:`probe` decodes at most while looking for a first frame.
FIRST_FRAME_PACKET_LIMIT = 300

_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*")
_MP4_BRANDS = (b"ftyp", b"moov", b"mdat", b"free", b"wide")


# --------------------------------------------------------------------------- probe


def probe(path: str | Path) -> VideoInfo:
    """Read a video's metadata and count its decodable frames.

    Returns:
        VideoInfo: ``width``/``height`` as displayed (swapped for a 90/270
        rotation), ``num_frames`` as decord counts them (the frames
        :func:`iter_chunks` yields), ``fps`` the stream's nominal average
        rate, ``duration_s`` the stream duration, ``rotation`` degrees
        clockwise (0, 90, 180, 270), ``codec`` FFmpeg's decoder name.
        ``extra`` holds ``container`` (format name), ``container_frames``
        (frame count the header declares, 0 if none; it can differ from
        ``num_frames``, e.g. 444 vs 68 for a cinepak AVI with empty index
        entries), ``start_time_s``, ``time_base`` (a ``Fraction``),
        ``coded_width``/``coded_height`` and ``audio_codec``.

    Raises:
        VideoError: one line naming the cause: file not found, a directory,
            empty file, not a video, no video stream (audio only), truncated,
            a corrupt header (more frames declared than the file can hold),
            unsupported codec, no decodable frames, or what decord reports.
    """
    path = Path(path)
    _check_file(path)
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise VideoError(path, _open_failure_cause(path, err)) from None
    except OSError as err:
        raise VideoError(path, f"cannot read: {err.strerror or err}") from None
    try:
        with container:
            info = _probe_container(path, container)
    except VideoError:
        raise
    except Exception as err:  # any other PyAV/FFmpeg failure: keep it one line
        raise VideoError(path, f"cannot read the container ({_one_line(err)})") from None

    num_frames = _decord_frame_count(path)
    extra = dict(info.pop("extra"))
    return VideoInfo(path=path, num_frames=num_frames, extra=extra, **info)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    if not path.is_file():
        raise VideoError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")


def _open_failure_cause(path: Path, err: Exception) -> str:
    """Why FFmpeg could not open ``path``: an unfinished MP4 or not a video."""
    reason = getattr(err, "strerror", None) or _one_line(err)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        head = b""
    if head[4:8] in _MP4_BRANDS:
        return (
            f"truncated or unfinished MP4: the index (moov atom) is missing, "
            f"the recording or copy probably did not finish ({reason})"
        )
    return f"not a video: cannot parse the container ({reason})"


def _probe_container(path: Path, container) -> dict:
    """Metadata from an open PyAV input container (``num_frames`` excluded)."""
    import av

    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        if container.streams.audio:
            raise VideoError(path, "no video stream (audio only)")
        raise VideoError(path, f"no video stream (streams: {', '.join(kinds) or 'none'})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:
        raise VideoError(path, "unsupported video codec: FFmpeg has no decoder for this stream")

    _check_truncated(path, stream)
    _check_declared_frames(path, stream)

    first = _first_frame(path, container, stream)
    rotation = _rotation_cw(first, stream)
    coded_w, coded_h = int(ctx.width or first.width), int(ctx.height or first.height)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)

    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if stream.duration is not None and tb is not None:
        duration = float(stream.duration * tb)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    audio = container.streams.audio
    return dict(
        width=width,
        height=height,
        fps=float(rate) if rate else 0.0,
        duration_s=duration,
        codec=ctx.name,
        rotation=rotation,
        has_audio=bool(audio),
        pixel_format=(ctx.pix_fmt or first.format.name or ""),
        extra=dict(
            container=container.format.name,
            container_frames=int(stream.frames or 0),
            start_time_s=start,
            time_base=tb,
            coded_width=coded_w,
            coded_height=coded_h,
            audio_codec=audio[0].codec_context.name if audio and audio[0].codec_context else None,
        ),
    )


def _check_truncated(path: Path, stream) -> None:
    """Raise if the container index points past the end of the file."""
    try:
        entries = stream.index_entries
        ends = [e.pos + e.size for e in entries if e.size > 0]
    except Exception:  # index not available for this format: nothing to check
        return
    size = path.stat().st_size
    if ends and max(ends) > size:
        complete = sum(1 for end in ends if end <= size)
        raise VideoError(
            path,
            f"truncated file: the index lists {len(ends)} frames ending at byte "
            f"{max(ends)} but the file has {size} bytes ({complete} frames complete); "
            f"the recording or copy probably did not finish",
        )


def _check_declared_frames(path: Path, stream) -> None:
    """Raise if the header declares more frames than the file could hold.

    Every frame takes at least one byte, so a larger count is a corrupt
    header, not a video.  decord sizes its frame tables by this count and
    aborts the whole process (``std::bad_alloc``, uncatchable) when a
    flipped bit makes it billions, so such a file must never reach it.
    """
    declared = int(stream.frames or 0)
    size = path.stat().st_size
    if declared > size:
        raise VideoError(
            path, f"corrupt header: the video stream declares {declared} frames, more than a {size}-byte file can hold"
        )


def _first_frame(path: Path, container, stream):
    """Decode the first frame (proves the stream decodes; carries the rotation)."""
    import av

    try:
        for n, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return frame
            if n >= FIRST_FRAME_PACKET_LIMIT:
                break
    except av.error.FFmpegError as err:
        raise VideoError(path, f"corrupt video: the first frame does not decode ({_one_line(err)})") from None
    raise VideoError(path, "no decodable frames")


def _rotation_cw(frame, stream) -> int:
    """Display rotation in degrees clockwise, snapped to 0/90/180/270.

    PyAV 18 exposes the display matrix on decoded frames (``frame.rotation``,
    counter-clockwise degrees); older files may carry a ``rotate`` tag
    (clockwise degrees) instead.
    """
    ccw = getattr(frame, "rotation", 0) or 0
    if ccw:
        degrees = -float(ccw)
    else:
        try:
            degrees = float(stream.metadata.get("rotate", 0))
        except (TypeError, ValueError):
            degrees = 0.0
    return int(round(degrees / 90.0)) % 4 * 90


def _decord_frame_count(path: Path) -> int:
    reader = _open_decord(path, num_threads=1)
    try:
        return len(reader)
    finally:
        del reader


def _open_decord(path: Path, ctx=None, num_threads: int = 0):
    """A ``decord.VideoReader``, its failures turned into :class:`VideoError`."""
    import decord

    try:
        return decord.VideoReader(str(path), ctx=ctx or decord.cpu(0), num_threads=num_threads)
    except Exception as err:  # DECORDError, RuntimeError, AssertionError from decord
        raise VideoError(path, _decord_cause(err)) from None


def _decord_cause(err: Exception) -> str:
    msg = _DECORD_PREFIX.sub("", _one_line(err))
    if "cannot find video stream" in msg:
        return "no video stream decord can decode (unsupported codec?)"
    if "Invalid frame count" in msg or "Cannot create buffer source" in msg:
        return "no decodable frames"
    if "Error sending packet" in msg:
        return "the decoder rejects a packet"
    if "Unable to handle EOF" in msg:
        return "decord gives up near the end of the stream"
    if msg.startswith("Error reading"):
        return "decord cannot open it (not a video or unsupported container)"
    return f"decord cannot read it ({msg})"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    return first[:300]


# --------------------------------------------------------------------------- device


def decode_backend(device: str = "cpu") -> tuple[str, str]:
    """Where frames for ``device`` are decoded, and why.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``(ctx_description, reason)``, e.g. ``("CPU", "decord built without
        CUDA, copying frames to cuda:0")`` or ``("GPU cuda:0 (decord NVDEC)",
        "decord built with CUDA")``.  The CLI logs it as
        ``f"decoding on {ctx_description} ({reason})"``.
    """
    kind, index = _parse_device(device)
    if kind == "cpu":
        return "CPU", "requested device is cpu"
    target = f"cuda:{index}"
    if not _decord_has_cuda():
        return "CPU", f"decord built without CUDA, copying frames to {target}"
    import decord

    if not decord.gpu(index).exist:
        return "CPU", f"decord has CUDA but sees no {target}, copying frames to {target}"
    return f"GPU {target} (decord NVDEC)", "decord built with CUDA"


def _parse_device(device) -> tuple[str, int]:
    text = str(device)
    if text == "cpu":
        return "cpu", 0
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return "cuda", int(match.group(1) or 0)


def _decord_has_cuda() -> bool:
    """True when the installed decord was built with CUDA (the PyPI wheel is not)."""
    import decord

    return "device_api.gpu" in decord.list_global_func_names()


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Span:
    """A part of a video, ``[start, end)``, each bound in seconds or as a frame index.

    Attributes:
        start (tuple[float, str] | None): (value, ``"s"`` or ``"f"``); None: the first frame.
        end (tuple[float, str] | None): (value, unit), exclusive; None: to the last frame.
    """

    start: tuple[float, str] | None = None
    end: tuple[float, str] | None = None

    @staticmethod
    def parse_bound(text: str) -> tuple[float, str]:
        """``"12.5"``, ``"12.5s"``, ``"1:02.5"``, ``"1:00:00"`` (seconds) or ``"300f"`` (a frame index) -> (value, unit).

        Raises:
            ValueError: anything else, or a negative value.
        """
        raw = str(text).strip().lower()
        try:
            if raw.endswith("f"):
                value, unit = float(int(raw[:-1])), "f"
            else:
                parts = raw.removesuffix("s").split(":")
                if len(parts) > 3:
                    raise ValueError
                value, unit = 0.0, "s"
                for part in parts:
                    value = value * 60 + float(part)
        except ValueError:
            raise ValueError(f"{text!r} is not a time: use seconds (12.5, 12.5s, 1:02.5) or a frame index (300f)") from None
        if value < 0:
            raise ValueError(f"{text!r}: a time cannot be negative")
        return value, unit

    @classmethod
    def from_text(cls, start: str | None, end: str | None) -> "Span | None":
        """The span of ``--start`` / ``--end`` (None when both are absent)."""
        if start is None and end is None:
            return None
        return cls(None if start is None else cls.parse_bound(start), None if end is None else cls.parse_bound(end))

    def frames(self, times: np.ndarray) -> tuple[int, int]:
        """(first, stop): the frames whose index / time (``times`` float64[N], seconds) lie in the span."""
        n = len(times)

        def position(bound, default):
            if bound is None:
                return default
            value, unit = bound
            if unit == "f":
                return min(int(value), n)
            return int(np.searchsorted(times, value - 1e-9, side="left"))

        return position(self.start, 0), max(position(self.start, 0), position(self.end, n))

    def describe(self) -> str:
        def show(bound):
            return "-" if bound is None else f"{int(bound[0])}f" if bound[1] == "f" else f"{bound[0]:g}s"

        return f"{show(self.start)} to {show(self.end)}"


def iter_chunks(
    path: str | Path,
    chunk_size: int = 32,
    device: str = "cpu",
    info: VideoInfo | None = None,
    span: Span | None = None,
    size: tuple[int, int] | None = None,
) -> Iterator[FrameChunk]:
    """Stream a video (or the frames of ``span``) as consecutive chunks of frames.

    Memory is bounded by one chunk (``chunk_size x H x W x 3`` bytes) plus
    decord's per-file index and timestamp table (16 bytes a frame): nothing is
    cached across chunks.  Close the generator (or exhaust it) to release the
    reader.

    Args:
        path: the video file.
        chunk_size: frames per chunk (the last chunk may be shorter).
        device: ``"cpu"`` or ``"cuda[:N]"``; see :func:`decode_backend`.
        info: the result of :func:`probe` for ``path`` (probed when None).
        size: (width, height) smaller than the video's to decode straight to
            (FFmpeg's bilinear scaler), where the PyAV backend decodes
            the whole video without rotation; the chunks then carry the
            video's size in ``source_size``.  Elsewhere frames come at the
            video's size (``source_size`` None).

    Yields:
        FrameChunk: ``frames`` uint8 tensor [B, H, W, 3] RGB on ``device``,
        rotation applied (H, W = ``info.height``, ``info.width``);
        ``timestamps`` float64[B] seconds; ``start`` index of the first frame.
        Exactly ``info.num_frames`` frames in total, or the frames of
        ``span`` (the decoder seeks to its start where it can); ``start``
        and ``timestamps`` stay the video's own.

    Raises (also):
        VideoError: ``span`` holds no frame of the video.

    Raises:
        VideoError: the file cannot be opened, or a frame fails to decode
            (truncated or corrupt file; the message names the frame index).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    info = info or probe(path)
    _parse_device(device)
    return _iter_chunks(path, info, chunk_size, str(device), span, size)


def _iter_chunks(path: Path, info: VideoInfo, chunk_size: int, device: str, span: Span | None = None,
                 size: tuple[int, int] | None = None) -> Iterator[FrameChunk]:
    if info.rotation or (span is None and device == "cpu"):
        smaller = size is not None and tuple(size) != (info.width, info.height) and size[0] <= info.width and size[1] <= info.height
        scaled = tuple(size) if smaller and not info.rotation else None
        yield from _clip_to_span(_chunks_pyav(path, info, chunk_size, device, scaled), span, path)
        return
    yielded = False
    try:
        for chunk in _chunks_decord(path, info, chunk_size, device, span):
            yielded = True
            yield chunk
    except _DecordFailed as failed:
        if yielded:
            raise failed.error from None
        # decord gave nothing at all (seen with short MPEG-TS files with
        # B-frames): PyAV decodes the same frames, or fails with its own cause.
        log.warning("%s; decoding with PyAV instead", failed.error)
        yield from _clip_to_span(_chunks_pyav(path, info, chunk_size, device), span, path)


def _clip_to_span(chunks: Iterator[FrameChunk], span: Span | None, path: Path) -> Iterator[FrameChunk]:
    """The parts of ``chunks`` inside ``span`` (frames before it are decoded and dropped; decoding stops after it)."""
    if span is None:
        yield from chunks
        return
    found = False
    try:
        for chunk in chunks:
            stamps = np.asarray(chunk.timestamps, dtype=np.float64)
            index = chunk.start + np.arange(len(stamps))
            keep = np.ones(len(stamps), bool)
            for bound, after in ((span.start, True), (span.end, False)):
                if bound is not None:
                    value = index if bound[1] == "f" else stamps + 1e-9
                    keep &= (value >= bound[0]) if after else (value < bound[0])
            if keep.any():
                rows = np.flatnonzero(keep)
                a, b = int(rows[0]), int(rows[-1]) + 1
                found = True
                yield FrameChunk(start=chunk.start + a, frames=chunk.frames[a:b], timestamps=stamps[a:b].copy(),
                                 source_size=chunk.source_size)
            elif found:
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if not found:
        raise VideoError(path, f"--start/--end ({span.describe()}) hold no frame of the video")


class _DecordFailed(Exception):
    """decord failed mid-stream; ``error`` is the VideoError to show."""

    def __init__(self, error: VideoError):
        super().__init__(str(error))
        self.error = error


def rotate_frames(frames, rotation: int):
    """Turn frames clockwise by ``rotation`` degrees.

    Args:
        frames: uint8 tensor [B, H, W, C].
        rotation: 0, 90, 180 or 270 (clockwise, as ``VideoInfo.rotation``).

    Returns:
        A contiguous tensor [B, H', W', C]; H' and W' swap for 90 and 270.
    """
    import torch

    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    k = (rotation // 90) % 4
    if k == 0:
        return frames
    return torch.rot90(frames, k=-k, dims=(1, 2)).contiguous()


def _chunks_decord(path: Path, info: VideoInfo, chunk_size: int, device: str, span: Span | None = None):
    import decord
    import torch

    kind, index = _parse_device(device)
    target = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
    ctx = decord.cpu(0)
    if kind == "cuda" and decode_backend(f"cuda:{index}")[0].startswith("GPU"):
        ctx = decord.gpu(index)
    try:
        # One decoder thread: as fast here as decord's default pool, whose
        # per-thread frame buffers grew memory over a long video
        # (benchmarks/bench_memory.py).
        reader = _open_decord(path, ctx=ctx, num_threads=1)
    except VideoError:
        if ctx.device_type == decord.cpu(0).device_type:
            raise
        log.warning("%s: decord cannot decode it on cuda:%d, decoding on CPU", path, index)
        reader = _open_decord(path, num_threads=1)
    n = len(reader)
    if n != info.num_frames:
        raise VideoError(path, f"frame count changed since probe ({info.num_frames} -> {n}); was the file replaced?")
    try:
        times = _frame_times(path, reader, info)
        first, last = (0, n) if span is None else span.frames(times)
        if first >= last:
            raise VideoError(path, f"--start/--end ({span.describe()}) hold no frame of the video ({n} frames, "
                                   f"{times[-1] if n else 0:.2f} s)")
        for start in range(first, last, chunk_size):
            stop = min(start + chunk_size, last)
            try:
                batch = reader.get_batch(range(start, stop))
            except Exception as err:
                bad = _first_bad_frame(path, start, stop)
                raise _DecordFailed(
                    VideoError(
                        path,
                        f"cannot decode frame {bad} of {n}: file truncated or corrupt ({_decord_cause(err)})",
                    )
                ) from None
            frames = _to_torch(batch)
            if frames.device != target:
                frames = frames.to(target, non_blocking=False)
            yield FrameChunk(start=start, frames=frames, timestamps=times[start:stop].copy())
    finally:
        del reader


def _frame_times(path: Path, reader, info: VideoInfo) -> np.ndarray:
    """Start time of every frame in seconds, float64[num_frames].

    decord's table (float32, from packet pts) is used when it is sane.  When
    the stream has no start time (Matroska written by some muxers) decord
    subtracts FFmpeg's "no value" marker and returns ~9.2e15 for every frame;
    then the times come from the packets' pts, read with PyAV without
    decoding, and as a last resort from the frame rate.
    """
    n = len(reader)
    try:
        times = np.asarray(reader.get_frame_timestamp(range(n))[:, 0], dtype=np.float64)
    except Exception:
        times = np.full(n, np.nan)
    limit = max(info.duration_s, n / info.fps if info.fps else 0.0) + 3600.0
    if np.isfinite(times).all() and (np.abs(times) < limit).all():
        return times
    packet_times = _packet_times(path)
    if packet_times is not None and len(packet_times) == n:
        return packet_times
    log.warning("%s: no usable frame timestamps, using frame index / fps", path)
    return np.arange(n) / (info.fps or 1.0)


def _packet_times(path: Path) -> np.ndarray | None:
    """Sorted pts (seconds from the first) of the non-empty video packets."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            pts = [p.pts if p.pts is not None else p.dts for p in container.demux(stream) if p.size > 0]
            if any(t is None for t in pts) or not pts:
                return None
            pts.sort()
            origin = stream.start_time if stream.start_time is not None else pts[0]
            return np.array([float((t - origin) * stream.time_base) for t in pts])
    except Exception:
        return None


def _to_torch(batch):
    """A decord batch as a torch tensor, whatever decord bridge is active."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch
    if hasattr(batch, "to_dlpack"):
        from decord.bridge import to_torch

        return to_torch(batch)
    return torch.from_numpy(np.asarray(batch))


def _first_bad_frame(path: Path, start: int, stop: int) -> int:
    """Index of the first frame in [start, stop) a fresh reader fails on.

    decord's reader is unusable after an error, so a new one seeks to
    ``start`` and reads on frame by frame.  Its decoder threads can report a
    broken packet a frame or two late, so the index is the first frame decord
    cannot return, not necessarily the first damaged packet.
    """
    import decord

    index = start
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        reader.seek_accurate(start)
        for index in range(start, stop):
            reader.next()
    except Exception:
        return index
    return start


def _decord_frames(path: Path, start: int, stop: int, time_base, start_pts: int) -> Iterator:
    """Frames ``start`` .. ``stop - 1`` of ``path`` as decord decodes them, as PyAV frames (coded
    size, RGB) whose pts in ``time_base`` from ``start_pts`` are decord's timestamps.  Stops early
    (the caller raises) where decord fails too."""
    import av
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        times = np.asarray(reader.get_frame_timestamp(range(start, stop))[:, 0], np.float64)
        batch = reader.get_batch(range(start, stop)).asnumpy()
    except Exception:
        return
    for image, seconds in zip(batch, times):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.time_base = time_base
        frame.pts = start_pts + round(seconds / time_base)
        yield frame


def _chunks_pyav(path: Path, info: VideoInfo, chunk_size: int, device: str, size: tuple[int, int] | None = None):
    """Decode with PyAV (coded frames) and rotate, or scale to ``size`` (no rotation); see the module doc."""
    import av
    import torch

    n = info.num_frames
    target = torch.device(device)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(path, f"cannot open it ({_one_line(err)})") from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start_pts = stream.start_time or 0
        h, w = (info.width, info.height) if info.rotation in (90, 270) else (info.height, info.width)
        scale = {} if size is None else {"width": size[0], "height": size[1], "interpolation": "BILINEAR"}
        if size is not None:
            w, h = size
        index = 0
        frames = np.empty((min(chunk_size, n), h, w, 3), np.uint8)
        times = np.empty(len(frames), np.float64)
        decoded, tail = container.decode(stream), False
        while index < n:
            try:
                frame = next(decoded)
            except StopIteration:
                if tail:
                    raise VideoError(path, f"cannot decode frame {index} of {n}: the stream ends early (truncated?)") from None
                # FFmpeg's decoder can drop a damaged last frame that decord (the frame count) still returns
                log.warning("%s: PyAV decoded %d of %d frames; decoding the rest with decord", path, index, n)
                decoded, tail = _decord_frames(path, index, n, stream.time_base, start_pts), True
                continue
            except av.error.FFmpegError as err:
                raise VideoError(
                    path, f"cannot decode frame {index} of {n}: file truncated or corrupt ({_one_line(err)})"
                ) from None
            k = index % chunk_size
            frames[k] = frame.to_ndarray(format="rgb24", **scale)
            if frame.pts is not None and frame.time_base is not None:
                times[k] = float((frame.pts - start_pts) * frame.time_base)
            else:
                times[k] = index / info.fps if info.fps else 0.0
            index += 1
            if k == len(frames) - 1 or index == n:
                batch = rotate_frames(torch.from_numpy(frames[: k + 1]), info.rotation).to(target)
                yield FrameChunk(start=index - k - 1, frames=batch, timestamps=times[: k + 1].copy(),
                                 source_size=None if size is None else (info.width, info.height))
                frames = np.empty((min(chunk_size, n - index), h, w, 3), np.uint8)
                times = np.empty(len(frames), np.float64)
