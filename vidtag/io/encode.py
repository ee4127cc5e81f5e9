"""Write H.264 MP4 files that play in browsers: :class:`VideoEncoder`,
:class:`BackgroundEncoder`.

Format: libx264 through PyAV's bundled FFmpeg, ``yuv420p`` tagged BT.601
limited range (the conversion is OpenCV's ``COLOR_RGB2YUV_I420``, faster
than swscale), ``movflags=+faststart`` so the index comes first.

Odd sizes: 4:2:0 chroma covers 2x2 pixel blocks and H.264 crops in 2-pixel
units for 4:2:0, so an odd width or height cannot be stored exactly.  The
encoder pads the right column / bottom row by repeating the edge pixel; the
file is then one pixel wider / taller than the source (``coded_width``,
``coded_height``) and every source pixel keeps its coordinates, so boxes drawn
in source pixels stay exact.  (yuv444p would keep the size but browsers do not
play High 4:4:4.)

Threads: libx264 defaults to 1.5 threads per core, which competes with
inference for the same cores.  :func:`default_x264_threads` gives a quarter of
the cores, at least 1 and at most 4: one thread on a 2-core machine, which
still encodes 640x360 at several hundred frames a second with ``veryfast``
(see ``benchmarks/bench_encode.py``).

Files are written to a hidden temporary name next to ``path`` and renamed on
a successful :meth:`VideoEncoder.close`: after an error or :meth:`abort`
nothing new is left at ``path`` (a file already there from an earlier run is
neither replaced nor removed).
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidtag.errors import VideoError

#: Time base of the output when the caller gives none: divisible by the usual
#: rates (24, 25, 30, 50, 60 and 30000/1001 -> 3003 ticks).
DEFAULT_TIME_BASE = Fraction(1, 90000)

#: Audio codecs the MP4 muxer takes as they are; others are re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})

#: Seconds of source audio muxed ahead of the video (keeps the file interleaved).
AUDIO_LEAD_S = 0.5

# FFmpeg enum values (libavutil/pixfmt.h): BT.601 "SMPTE 170M", limited range.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_PRI_SMPTE170M = 6
_AVCOL_TRC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


DEFAULT_LOOKAHEAD = 5
"""x264 rate-control lookahead of vidtag's MP4s, frames (see :class:`VideoEncoder`)."""


def default_x264_threads(cpu_count: int | None = None) -> int:
    """libx264 threads: a quarter of the cores, within [1, 4] (1 on 2 cores)."""
    cores = cpu_count or os.cpu_count() or 1
    return max(1, min(4, cores // 4))


class VideoEncoder:
    """An H.264 MP4 sink for RGB frames with explicit presentation times.

    Use as a context manager: a clean exit calls :meth:`close`, an exception
    calls :meth:`abort`.

    Args:
        path: output file (``.mp4``).
        width, height: frame size in pixels, as the frames given to
            :meth:`write`.  Odd sizes are padded by one pixel (module doc).
        fps: nominal frame rate; used for rate control and for the duration
            of the last frame.  Frame times come from ``pts_s``.
        time_base: tick of the output timestamps (default
            :data:`DEFAULT_TIME_BASE`); passing the source stream's time base
            keeps its ticks exactly.
        audio_source: a media file whose first audio stream is copied into
            the output (re-encoded to AAC only when MP4 cannot hold its codec,
            see ``audio_mode``).  Its timing is kept relative to that file's
            first video frame, which is time 0 of ``pts_s``.  No audio when
            None or when the file has no audio stream.
        crf, preset: libx264 quality (lower is better, 23 is x264's default)
            and speed preset.
        threads: libx264 threads (default :func:`default_x264_threads`).
        lookahead: frames x264's rate control looks ahead (``rc-lookahead``;
            the ``veryfast`` preset's own is 10).  Each frame of lookahead
            keeps a frame's planes and analysis in memory, so a short one
            keeps the encoder's memory small at large frame sizes.

    Attributes:
        coded_width, coded_height: the size stored in the file (even).
        audio_mode: ``"copy"``, ``"aac"`` (re-encoded) or None (no audio).
        frames_written: frames accepted by :meth:`write`.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        *,
        time_base: Fraction | None = None,
        audio_source: str | Path | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        threads: int | None = None,
        lookahead: int = DEFAULT_LOOKAHEAD,
    ):
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.coded_width, self.coded_height = self.width + self.width % 2, self.height + self.height % 2
        self.fps = float(fps)
        self.time_base = Fraction(time_base) if time_base is not None else DEFAULT_TIME_BASE
        self.audio_mode: str | None = None
        self.frames_written = 0
        self._last_pts: int | None = None
        self._frame_ticks = max(1, round(1 / (self.fps * self.time_base)))
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
        self._out = None
        self._audio_in = None
        self._audio_packets = None
        self._pending_audio = None
        self._closed = False
        try:
            self._open(crf, preset, threads or default_x264_threads(), lookahead, audio_source)
        except BaseException as err:
            self.abort()
            if isinstance(err, VideoError):
                raise
            if isinstance(err, Exception):
                raise VideoError(self.path, f"cannot create the video: {_one_line(err)}") from None
            raise

    def _open(self, crf: int, preset: str, threads: int, lookahead: int, audio_source) -> None:
        import av

        if not self.path.parent.is_dir():
            raise VideoError(self.path, f"output folder does not exist: {self.path.parent}")
        self._out = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._out.add_stream("libx264", rate=rate)
        stream.width, stream.height = self.coded_width, self.coded_height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        ctx.thread_count = threads
        ctx.colorspace = _AVCOL_SPC_SMPTE170M
        ctx.color_primaries = _AVCOL_PRI_SMPTE170M
        ctx.color_trc = _AVCOL_TRC_SMPTE170M
        ctx.color_range = _AVCOL_RANGE_MPEG
        stream.options = {"crf": str(crf), "preset": preset, "rc-lookahead": str(lookahead)}
        self._video = stream
        if audio_source is not None:
            self._open_audio(Path(audio_source))

    def _open_audio(self, source: Path) -> None:
        import av

        try:
            self._audio_in = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as err:
            raise VideoError(source, f"cannot read the audio source: {_one_line(err)}") from None
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        a_in = self._audio_in.streams.audio[0]
        videos = self._audio_in.streams.video
        start = videos[0].start_time if videos and videos[0].start_time is not None else None
        self._audio_offset_s = float(start * videos[0].time_base) if start is not None else 0.0
        name = a_in.codec_context.name if a_in.codec_context else ""
        if name in MP4_AUDIO_COPY:
            self._audio = self._out.add_stream_from_template(a_in)
            self.audio_mode = "copy"
        else:
            self._audio = self._out.add_stream("aac", rate=a_in.codec_context.sample_rate or 48000)
            # PCM in AVI often has an unordered "1 channels" layout the AAC
            # encoder refuses: ask for FFmpeg's default layout for the count.
            channels = a_in.codec_context.channels or 2
            self._audio.layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
            self.audio_mode = "aac"
        self._audio_src = a_in
        self._audio_packets = self._audio_in.demux(a_in)

    # ----------------------------------------------------------------- writing
    def write(self, frame: np.ndarray, pts_s: float) -> None:
        """Encode one frame.

        Args:
            frame: uint8 [height, width, 3] RGB (any strides).  Not kept after
                the call.
            pts_s: presentation time in seconds (the source frame's time).
                Times are rounded to ``time_base``; a time not after the
                previous frame's is moved one tick after it (the MP4 muxer
                needs increasing times).
        """
        if self._closed:
            raise RuntimeError("write() after close() or abort()")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame must be uint8 [{self.height}, {self.width}, 3], got {frame.dtype} {list(frame.shape)}"
            )
        pts = round(Fraction(pts_s) / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        try:
            self._encode(frame, pts)
            self._mux_audio_until(pts * self.time_base + AUDIO_LEAD_S)
        except Exception as err:
            self.abort()
            raise VideoError(self.path, f"cannot encode frame {self.frames_written}: {_one_line(err)}") from None
        self._last_pts = pts
        self.frames_written += 1

    def _encode(self, frame: np.ndarray, pts: int) -> None:
        import av
        import cv2

        pad_h, pad_w = self.coded_height - self.height, self.coded_width - self.width
        if pad_h or pad_w:
            frame = cv2.copyMakeBorder(frame, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        yuv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)
        vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        vf.pts = pts
        vf.time_base = self.time_base
        vf.duration = self._frame_ticks
        self._out.mux(self._video.encode(vf))

    def _mux_audio_until(self, until_s: float | None) -> None:
        """Mux source audio up to ``until_s`` seconds (all of it when None)."""
        if self._audio_packets is None:
            return
        tb = self._audio_src.time_base
        offset = round(Fraction(self._audio_offset_s) / tb) if self._audio_offset_s else 0
        while True:
            packet = self._pending_audio
            self._pending_audio = None
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is None:
                    self._audio_packets = None
                    self._flush_audio_encoder()
                    return
            if packet.dts is None:  # demuxer's end-of-stream marker
                continue
            if until_s is not None and packet.pts is not None and float((packet.pts - offset) * tb) > until_s:
                self._pending_audio = packet
                return
            if self.audio_mode == "copy":
                # negative times (AAC priming, audio before the first video
                # frame) are kept: the MP4 muxer writes them as an edit list
                packet.pts = None if packet.pts is None else packet.pts - offset
                packet.dts -= offset
                packet.stream = self._audio
                self._out.mux(packet)
            else:
                for aframe in packet.decode():
                    aframe.pts = None
                    self._out.mux(self._audio.encode(aframe))

    def _flush_audio_encoder(self) -> None:
        if self.audio_mode == "aac":
            self._out.mux(self._audio.encode(None))

    # ----------------------------------------------------------------- ending
    def close(self) -> None:
        """Flush the encoder, finish the file and move it to ``path``.

        Raises:
            VideoError: nothing was written, or FFmpeg failed (the partial file
                is removed).
        """
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise VideoError(self.path, "no frames were written")
        try:
            self._out.mux(self._video.encode(None))
            self._mux_audio_until(None)
            self._out.close()
            self._out = None
            os.replace(self._tmp, self.path)
        except Exception as err:
            self.abort()
            raise VideoError(self.path, f"cannot finish the video: {_one_line(err)}") from None
        finally:
            self._close_audio_source()
        self._closed = True

    def abort(self) -> None:
        """Stop writing and delete the partial file (idempotent, never raises)."""
        self._closed = True
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # the file is deleted below anyway
                pass
            self._out = None
        self._close_audio_source()
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass

    def _close_audio_source(self) -> None:
        self._audio_packets = None
        self._pending_audio = None
        if self._audio_in is not None:
            try:
                self._audio_in.close()
            except Exception:
                pass
            self._audio_in = None

    def __enter__(self) -> "VideoEncoder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_STOP = object()


class BackgroundEncoder:
    """A :class:`VideoEncoder` that encodes in a background thread.

    :meth:`write` queues the frame and returns at once unless ``queue_size``
    frames already wait (then it blocks: memory stays bounded).  libx264 and
    the colour conversion release the GIL, so encoding overlaps with
    inference in the calling thread.  An encoding error is raised by the next
    :meth:`write` or by :meth:`close`.

    Frames are referenced, not copied: do not modify an array after passing it
    to :meth:`write`.

    Args:
        path, width, height, fps, **options: as :class:`VideoEncoder` (the
            file is opened here, in the caller's thread, so open errors raise
            at once).
        queue_size: frames that may wait to be encoded.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, *, queue_size: int = 4, **options):
        self.encoder = VideoEncoder(path, width, height, fps, **options)
        self.path = self.encoder.path
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._errors: list[BaseException] = []  # shared with the thread (which never holds ``self``)
        self._closed = False
        self._thread = threading.Thread(
            target=_encode_loop,
            args=(self.encoder, self._queue, self._errors),
            name=f"encode:{self.path.name}",
            daemon=True,
        )
        self._thread.start()

    def write(self, frame: np.ndarray, pts_s: float) -> None:
        """Queue one frame (see :meth:`VideoEncoder.write`)."""
        if self._closed:
            raise RuntimeError("write() after close() or abort()")
        shape = (self.encoder.height, self.encoder.width, 3)
        if getattr(frame, "dtype", None) != np.uint8 or tuple(frame.shape) != shape:
            raise ValueError(f"frame must be uint8 {list(shape)}, got {getattr(frame, 'dtype', type(frame))} "
                             f"{list(getattr(frame, 'shape', []))}")
        while True:
            self._raise_error()
            try:
                self._queue.put((frame, pts_s), timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise_error()
                    raise VideoError(self.path, "the encoder thread stopped")

    def close(self) -> None:
        """Encode what is queued, finish the file and move it to ``path``."""
        if self._closed:
            return
        self._closed = True
        self._put_stop()
        self._thread.join()
        if self._errors:
            self.encoder.abort()
            raise self._errors[0]
        self.encoder.close()

    def abort(self) -> None:
        """Drop queued frames, stop the thread and delete the partial file."""
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._put_stop()
        self._thread.join()
        self.encoder.abort()

    def _put_stop(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._errors:
            self._closed = True
            self._put_stop()
            self._thread.join()
            self.encoder.abort()
            raise self._errors[0]

    @property
    def frames_written(self) -> int:
        return self.encoder.frames_written

    def __enter__(self) -> "BackgroundEncoder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _encode_loop(encoder: VideoEncoder, q: queue.Queue, errors: list) -> None:
    """The encoder thread: write queued frames until the stop marker."""
    while True:
        item = q.get()
        if item is _STOP:
            return
        if errors:
            continue  # drain after a failure so writers never block
        try:
            encoder.write(*item)
        except BaseException as err:
            errors.append(err)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__
