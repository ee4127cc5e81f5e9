"""Small synthetic test-pattern clips, written with PyAV: the inputs the tests
and the benchmarks generate (``tests/clips.py`` adds the broken ones).

The default pattern draws, on a dark grey background:

* a red square in the top-left corner of the *coded* frame (an orientation
  marker: after a clockwise display rotation of 90 degrees it is top-right);
* a green box moving left to right and a blue box moving top to bottom, their
  positions a function of the frame index (see :func:`box_positions`), so a
  test can check which frame it got.

:func:`frame_at` returns exactly what was fed to the encoder, so a test can
compare decoded frames with it (allowing for compression error).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

BACKGROUND = 40
MARKER = (230, 30, 30)  # red, top-left of the coded frame
MOVING = ((30, 200, 30), (30, 60, 230))  # green (moves in x), blue (moves in y)


def box_positions(index: int, width: int, height: int) -> tuple[tuple[int, int, int, int], ...]:
    """Boxes drawn on frame ``index``: ``(x1, y1, x2, y2)`` pixels, exclusive ends.

    Returns (marker, green box, blue box) in coded-frame coordinates.
    """
    m = max(2, min(width, height) // 8)
    bw, bh = max(2, width // 6), max(2, height // 6)
    span_x, span_y = max(1, width - bw), max(1, height - bh)
    gx = (3 * index) % span_x
    by = (2 * index) % span_y
    return (
        (0, 0, m, m),
        (gx, height // 2 - bh // 2, gx + bw, height // 2 - bh // 2 + bh),
        (width // 2, by, width // 2 + bw, by + bh),
    )


def frame_at(index: int, width: int, height: int, pattern: str = "rects") -> np.ndarray:
    """The frame ``index`` of a clip: uint8 [height, width, 3] RGB, coded orientation.

    ``pattern``: ``"rects"`` (see module doc) or ``"noise"`` (uniform random
    pixels seeded by the index: the worst case for an encoder).
    """
    if pattern == "noise":
        return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if pattern != "rects":
        raise ValueError(f"unknown pattern {pattern!r}: use 'rects' or 'noise'")
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    for (x1, y1, x2, y2), colour in zip(box_positions(index, width, height), (MARKER, *MOVING)):
        img[y1:y2, x1:x2] = colour
    return img


def make_clip(
    path: str | Path,
    n_frames: int = 30,
    width: int = 64,
    height: int = 48,
    fps: float = 25,
    codec: str = "libx264",
    audio: bool = False,
    rotation: int = 0,
    pattern: str = "rects",
    times: Sequence[float] | None = None,
) -> Path:
    """Write a synthetic clip and return its path.

    Args:
        path: output file; the container comes from the suffix (``.mp4``,
            ``.mkv``, ``.avi``, ``.mov``).
        n_frames: number of video frames.
        width, height: coded frame size in pixels.  libx264 with yuv420p needs
            even sizes; odd sizes are encoded as yuv444p (still H.264).
        fps: nominal frame rate; frame ``i`` is shown at ``i / fps`` seconds
            unless ``times`` is given.
        codec: FFmpeg encoder name (``libx264``, ``mpeg4``, ``mjpeg``, ...).
        audio: add an AAC (``.mp4``/``.mov``/``.mkv``) or PCM (``.avi``) sine
            tone as long as the video (1 s when ``n_frames`` is 0: a file with
            an empty video stream).
        rotation: display rotation metadata, degrees clockwise (0, 90, 180,
            270); frames are stored unrotated.
        pattern: ``"rects"`` or ``"noise"``, see :func:`frame_at`.
        times: presentation time of each frame in seconds, increasing (makes a
            variable-frame-rate clip); length ``n_frames``.
    """
    import av

    path = Path(path)
    if n_frames == 0 and not audio:
        raise ValueError("a clip with no frames needs audio=True (FFmpeg writes nothing otherwise)")
    if times is not None and len(times) != n_frames:
        raise ValueError(f"times has {len(times)} entries for {n_frames} frames")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        odd = width % 2 or height % 2
        if codec == "libx264":
            stream.pix_fmt = "yuv444p" if odd else "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec == "mjpeg":
            stream.pix_fmt = "yuvj420p"
        elif codec in ("rawvideo", "ffv1"):
            stream.pix_fmt = "yuv444p" if codec == "ffv1" else "rgb24"
        else:
            stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees

        astream = None
        if audio:
            acodec = "pcm_s16le" if path.suffix.lower() == ".avi" else "aac"
            astream = out.add_stream(acodec, rate=48000)
            astream.layout = "mono"

        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_at(i, width, height, pattern), format="rgb24")
            if times is not None:
                frame.time_base = Fraction(1, 1000)
                frame.pts = round(times[i] * 1000)
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())

        if astream is not None:
            if n_frames == 0:
                duration = 1.0
            else:
                duration = (times[-1] + 1 / fps) if times is not None else n_frames / fps
            write_tone(astream, out, duration)
    return path


def write_tone(stream, out, duration_s: float, rate: int = 48000) -> None:
    """Mux a 440 Hz mono tone of ``duration_s`` seconds into ``stream``."""
    import av

    n = int(round(duration_s * rate))
    t = np.arange(n) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt = stream.codec_context.format.name
    block = 1024
    for start in range(0, n, block):
        chunk = samples[start : start + block]
        if fmt.startswith("s16"):
            arr = (chunk * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(arr, format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())
