"""Synthetic video from still photos: camera motion and moving pasted objects.

Label-free training of the temporal modules needs scene variety that a few
real clips cannot give.  :func:`synth_clip` turns one photo into a short clip
a camera could have filmed: a smooth path of pan, zoom and rotation with
hand-held shake, plus a few patches cut from other photos that slide across
the frame (objects entering, passing and occluding).  The frozen per-frame
teacher labels these frames as it labels real footage, so nothing here
produces boxes.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``:
the same inputs and seed give the same frames, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class MotionRanges:
    """How far the synthetic camera and the pasted objects may move.

    Attributes:
        zoom (tuple[float, float]): magnification of the output over the part of
            the photo it shows, at the start and at the end of the clip (each drawn in this range).
        pan (float): largest move of the view centre over the clip, as a fraction
            of the photo's shorter side.
        rotation_deg (float): largest rotation at the end of the clip, degrees.
        shake_px (float): amplitude of the hand-held shake, output pixels.
        objects (tuple[int, int]): how many pasted objects (inclusive range).
        object_size (tuple[float, float]): object side as a fraction of the output's shorter side.
        object_speed (float): largest object speed, output shorter sides per clip.
    """

    zoom: tuple[float, float] = (1.0, 1.6)
    pan: float = 0.25
    rotation_deg: float = 8.0
    shake_px: float = 3.0
    objects: tuple[int, int] = (0, 3)
    object_size: tuple[float, float] = (0.15, 0.4)
    object_speed: float = 0.8


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB; ValueError naming the file if it cannot be read."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image this build of OpenCV can read")
    return np.ascontiguousarray(image[:, :, ::-1])


def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _camera_matrices(rng: np.random.Generator, num_frames: int, image_hw: tuple[int, int], out_wh: tuple[int, int],
                     ranges: MotionRanges) -> np.ndarray:
    """float64[T, 2, 3] affines mapping photo pixels to output pixels, frame by frame."""
    ih, iw = image_hw
    ow, oh = out_wh
    # the scale that makes the output cover the photo's centre part at zoom 1
    cover = max(ow / iw, oh / ih)
    zoom = rng.uniform(*ranges.zoom, size=2)
    angle_end = rng.uniform(-ranges.rotation_deg, ranges.rotation_deg)
    side = min(iw, ih)
    centre0 = np.array([iw / 2, ih / 2]) + rng.uniform(-0.15, 0.15, size=2) * side
    centre1 = centre0 + rng.uniform(-ranges.pan, ranges.pan, size=2) * side
    # shake: two sines per axis with random phase and period (4-20 frames)
    periods = rng.uniform(4, 20, size=(2, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(2, 2))
    mats = np.zeros((num_frames, 2, 3))
    for i in range(num_frames):
        t = i / max(num_frames - 1, 1)
        s = cover * ((1 - t) * zoom[0] + t * zoom[1])
        # keep the view inside the photo: the visible half-extent in photo pixels
        half = np.array([ow, oh]) / (2 * s)
        centre = (1 - t) * centre0 + t * centre1
        centre = np.clip(centre, half, np.array([iw, ih]) - half) if (half * 2 <= [iw, ih]).all() else np.array([iw / 2, ih / 2])
        theta = np.deg2rad(t * angle_end)
        c, n = np.cos(theta) * s, np.sin(theta) * s
        shake = ranges.shake_px * (np.sin(2 * np.pi * i / periods[:, 0] + phases[:, 0]) * 0.6
                                   + np.sin(2 * np.pi * i / periods[:, 1] + phases[:, 1]) * 0.4)
        # output = R*s*(p - centre) + out_centre + shake
        linear = np.array([[c, -n], [n, c]])
        offset = np.array([ow / 2, oh / 2]) + shake - linear @ centre
        mats[i, :, :2] = linear
        mats[i, :, 2] = offset
    return mats


def synth_clip(
    image: np.ndarray,
    seed: int,
    num_frames: int = 32,
    size: tuple[int, int] = (416, 320),
    others: Sequence[np.ndarray] = (),
    ranges: MotionRanges = MotionRanges(),
) -> np.ndarray:
    """One photo -> a clip filmed by a moving camera, with moving pasted objects.

    Args:
        image: uint8 [H, W, 3] RGB photo, the scene.
        seed: seeds every random choice; same arguments, same frames.
        num_frames: T >= 1.
        size: output (width, height).
        others: photos the pasted objects are cut from (the scene itself when empty).
        ranges: how much the camera and the objects move.

    Returns:
        uint8 [T, height, width, 3] RGB frames.
    """
    import cv2

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    width, height = size
    rng = np.random.default_rng(seed)
    mats = _camera_matrices(rng, num_frames, image.shape[:2], (width, height), ranges)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = cv2.warpAffine(image, mats[i], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    sources = list(others) or [image]
    short = min(width, height)
    for _ in range(int(rng.integers(ranges.objects[0], ranges.objects[1] + 1))):
        src = sources[int(rng.integers(len(sources)))]
        sh, sw = src.shape[:2]
        side = rng.uniform(*ranges.object_size) * short
        ow = int(np.clip(side * rng.uniform(0.6, 1.6), 8, width - 1))
        oh = int(np.clip(side * rng.uniform(0.6, 1.6), 8, height - 1))
        # the patch: a random window of the source photo, resized to ow x oh
        cw, ch = int(rng.uniform(0.2, 0.7) * sw), int(rng.uniform(0.2, 0.7) * sh)
        cx, cy = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
        patch = cv2.resize(np.ascontiguousarray(src[cy : cy + ch, cx : cx + cw]), (ow, oh), interpolation=cv2.INTER_AREA)
        # elliptical alpha with a soft edge, so the paste has no hard rectangle
        yy, xx = np.mgrid[0:oh, 0:ow]
        r = ((xx - (ow - 1) / 2) / (ow / 2)) ** 2 + ((yy - (oh - 1) / 2) / (oh / 2)) ** 2
        alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0)[..., None]
        start = rng.uniform([-ow / 2, -oh / 2], [width - ow / 2, height - oh / 2])
        velocity = rng.uniform(-1, 1, size=2) * ranges.object_speed * short / max(num_frames - 1, 1)
        for i in range(num_frames):
            x0, y0 = np.round(start + i * velocity).astype(int)
            fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + ow, width), min(y0 + oh, height)
            if fx0 >= fx1 or fy0 >= fy1:
                continue
            a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            p = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].astype(np.float32)
            region = frames[i, fy0:fy1, fx0:fx1].astype(np.float32)
            frames[i, fy0:fy1, fx0:fx1] = np.round(a * p + (1 - a) * region).astype(np.uint8)
    return frames


def write_clip(frames: np.ndarray, path: str | Path, fps: float = 25.0) -> Path:
    """Encode ``frames`` (uint8 [T, H, W, 3] RGB, e.g. from :func:`synth_clip`) as an
    H.264 MP4 at ``path`` (:class:`vidtag.io.encode.VideoEncoder`); returns the path."""
    from vidtag.io.encode import VideoEncoder

    with VideoEncoder(path, frames.shape[2], frames.shape[1], fps) as encoder:
        for t, frame in enumerate(frames):
            encoder.write(frame, t / fps)
    return Path(path)
