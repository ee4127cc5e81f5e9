"""Speed of writing the annotated video (H.264 through vidtag.io.encode).

Reproduce:

    python benchmarks/bench_encode.py                 # 300 frames, 640x360
    python benchmarks/bench_encode.py --frames 300 --width 640 --height 360 --threads 1

Frames are generated in memory before timing, so only the encoder is measured
(RGB -> yuv420p, libx264 ``veryfast`` crf 23, MP4 mux, faststart rewrite).
Patterns: ``scene`` (smooth textured background, moving boxes, sensor noise:
close to real footage), ``flat`` (flat colours: easiest), ``noise`` (random
pixels: the worst case, no real video looks like it).

The ``+ inference`` rows add about 8 ms of torch work (one torch thread) per
frame in the calling thread: with ``VideoEncoder`` the two run one after the
other, with ``BackgroundEncoder`` they overlap and the pair runs at about the
speed of the inference alone.  The ``annotated video (vidtag sink)`` row is
what `vidtag detect` really does per frame: draw 20 tracked boxes with labels,
then encode with the sink's defaults (``BackgroundEncoder``, ``ultrafast``).
Requirement: >= 100 frames/s at 640x360 for annotated-video writing alone on
realistic content.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtag.io.encode import BackgroundEncoder, VideoEncoder, default_x264_threads  # noqa: E402


def make_frames(pattern: str, n: int, width: int, height: int) -> list[np.ndarray]:
    """``n`` uint8 [height, width, 3] RGB frames of ``pattern``."""
    rng = np.random.default_rng(0)
    if pattern == "noise":
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 160 + 40, y / height * 120 + 60, (x + y) / (width + height) * 100 + 80], -1)
    if pattern == "scene":
        import cv2

        texture = cv2.GaussianBlur(rng.normal(0, 40, (height, width, 3)).astype(np.float32), (0, 0), 3)
        base = base + texture
    frames = []
    for i in range(n):
        img = base.copy()
        for k, colour in enumerate(((220, 40, 40), (40, 200, 60), (250, 250, 250))):
            x1 = (37 * k + 4 * i) % (width - 80)
            y1 = (53 * k + 2 * i) % (height - 60)
            img[y1 : y1 + 60, x1 : x1 + 80] = colour
        if pattern == "scene":
            img += rng.normal(0, 3, img.shape).astype(np.float32)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


class FakeInference:
    """A fixed amount of torch work per frame (stands in for the model).

    ``ms`` is calibrated once: that many milliseconds of 384x384 matmuls on one
    torch thread.  torch kernels release the GIL, as a real forward pass does.
    """

    def __init__(self, ms: float):
        import torch

        torch.set_num_threads(1)  # two cores: one for the model, one for x264
        self.a = torch.rand(384, 384)
        start = time.perf_counter()
        for _ in range(20):
            self.a @ self.a
        per_matmul = (time.perf_counter() - start) / 20
        self.repeats = max(1, round(ms / 1000 / per_matmul))
        start = time.perf_counter()
        for _ in range(20):
            self()
        self.ms = (time.perf_counter() - start) / 20 * 1000

    def __call__(self) -> None:
        for _ in range(self.repeats):
            self.a @ self.a


def run(encoder_cls, frames, fps, threads, infer=None) -> tuple[float, int]:
    """Write ``frames``; returns (frames per second, output bytes)."""
    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        start = time.perf_counter()
        with encoder_cls(path, width, height, fps, threads=threads) as enc:
            for i, frame in enumerate(frames):
                if infer is not None:
                    infer()
                enc.write(frame, i / fps)
        elapsed = time.perf_counter() - start
        return len(frames) / elapsed, path.stat().st_size


def run_sink(frames, fps, boxes: int = 20) -> tuple[float, int]:
    """The annotated video exactly as `vidtag detect` writes it: draw ``boxes``
    tracked boxes on each frame, then the sink's default encoder and preset."""
    from vidtag.formats import VideoMeta, open_sink
    from vidtag.types import Detections

    height, width = frames[0].shape[:2]
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [width - 120, height - 120], (boxes, 2))
    dets = Detections(np.concatenate([xy, xy + rng.uniform(20, 120, (boxes, 2))], axis=1),
                      rng.uniform(0.3, 1, boxes), rng.integers(0, 80, boxes), np.arange(1, boxes + 1))
    meta = VideoMeta(name="bench", width=width, height=height, fps=fps, num_frames=len(frames),
                     classes=tuple(f"class{i}" for i in range(80)), info={})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.annotated.mp4"
        start = time.perf_counter()
        with open_sink("mp4", path, meta) as sink:
            for i, frame in enumerate(frames):
                sink.write(i, i / fps, dets, frame)
        elapsed = time.perf_counter() - start
        return len(frames) / elapsed, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=None, help="libx264 threads (default: vidtag's choice)")
    parser.add_argument("--infer-ms", type=float, default=8.0, help="fake inference per frame for the overlap rows")
    args = parser.parse_args()
    threads = args.threads or default_x264_threads()

    print(f"# {args.frames} frames {args.width}x{args.height}, libx264 veryfast crf 23, "
          f"{threads} x264 thread(s), {os.cpu_count()} CPU cores")
    print(f"{'pattern':8} {'writer':30} {'frames/s':>9} {'KiB':>8}")
    for pattern in ("scene", "flat", "noise"):
        frames = make_frames(pattern, args.frames, args.width, args.height)
        run(VideoEncoder, frames[:10], args.fps, threads)  # warm-up: imports, encoder init
        rows = [("VideoEncoder", VideoEncoder, threads, None), ("BackgroundEncoder", BackgroundEncoder, threads, None)]
        if pattern == "scene":
            if threads != 2:
                rows.append(("VideoEncoder, 2 x264 threads", VideoEncoder, 2, None))
            if args.infer_ms:
                infer = FakeInference(args.infer_ms)
                rows += [
                    ("VideoEncoder + inference", VideoEncoder, threads, infer),
                    ("BackgroundEncoder + inference", BackgroundEncoder, threads, infer),
                ]
        for label, cls, n_threads, infer in rows:
            speed, size = run(cls, frames, args.fps, n_threads, infer)
            print(f"{pattern:8} {label:30} {speed:9.0f} {size / 1024:8.0f}")
            if infer is not None and cls is BackgroundEncoder:
                print(f"{pattern:8} {'(fake inference alone)':30} {1000 / infer.ms:9.0f}")
        if pattern == "scene":
            speed, size = run_sink(frames, args.fps)
            print(f"{pattern:8} {'annotated video (vidtag sink)':30} {speed:9.0f} {size / 1024:8.0f}")

if __name__ == "__main__":
    main()
