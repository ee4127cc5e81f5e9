"""Seeded frame degradations for robustness benchmarks and distillation training.

Every degradation takes one frame ``uint8[H, W, 3]`` RGB and returns a new
frame of the same shape and dtype; the input is never modified.  Sizes are
given as fractions of the frame's short side (or of its width and height), so
a schedule means the same thing at any resolution.

A :class:`DegradationSchedule` marks bursts of 3-8 consecutive frames with one
kind each.  Parameters are drawn once per burst (blur angle, JPEG quality,
occluder size and texture) so a burst looks like one event; only the noise
seed and the occluder position change from frame to frame.  Parameters are
plain Python numbers, so a schedule can be logged as JSON next to benchmark
results.

Speed: OpenCV's ``filter2D`` switches to a DFT for kernels larger than
11x11, which is slow on full frames.  Large kernels therefore never reach it: defocus blurs a
downscaled frame (a defocused frame has nothing above the new Nyquist
frequency) and motion blur convolves a short piece of the line, then averages
copies of the result shifted along the line.  Both are checked against the
plain full-size kernel in the tests.

Noise comes from OpenCV's thread-local RNG (faster here than
NumPy's), reseeded from the spec for each frame: this resets
``cv2.theRNG()`` of the calling thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

KINDS = ("defocus", "motion_blur", "noise", "jpeg", "occluder", "darkness")

# filter2D stays in the spatial domain up to this kernel size (OpenCV 4/5).
_MAX_SPATIAL_KERNEL = 11


def _check_frame(frame: np.ndarray) -> np.ndarray:
    """The frame as a C-contiguous array, after checking it is uint8 [H, W, 3]."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {getattr(frame, 'shape', '')}"
        raise ValueError(f"expected a uint8 [H, W, 3] numpy frame, got {desc}")
    return np.ascontiguousarray(frame)


# --------------------------------------------------------------------------- kernels


def disk_kernel(radius: float) -> np.ndarray:
    """An anti-aliased disk (pillbox) that sums to 1.

    Args:
        radius: in pixels, > 0.

    Returns:
        float32[K, K] with K = 2 * ceil(radius) + 1; each cell holds the
        fraction of it inside the disk (4x4 supersampling), normalised.
    """
    half = math.ceil(radius)
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    coords = (np.arange(-half, half + 1)[:, None] + sub[None, :]).reshape(-1)
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2
    k = inside.reshape(2 * half + 1, 4, 2 * half + 1, 4).mean(axis=(1, 3)).astype(np.float32)
    return k / k.sum()


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A centred line segment that sums to 1: the kernel of linear motion.

    Args:
        length: segment length in pixels, >= 0 (0 gives the identity).
        angle_deg: direction, counter-clockwise from the +x axis (image y points
            down, so 90 is straight up).

    Returns:
        float32[K, K], K = 2 * ceil(length / 2) + 1; the segment is splatted
        bilinearly from points every 0.25 px.
    """
    half = math.ceil(length / 2)
    size = 2 * half + 1
    k = np.zeros((size, size), np.float64)
    t = np.linspace(-length / 2, length / 2, max(2, math.ceil(length * 4) + 1))
    theta = math.radians(angle_deg)
    x = half + t * math.cos(theta)
    y = half - t * math.sin(theta)
    x0 = np.clip(np.floor(x).astype(int), 0, size - 1)
    y0 = np.clip(np.floor(y).astype(int), 0, size - 1)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    np.add.at(k, (y0, x0), (1 - fx) * (1 - fy))
    np.add.at(k, (y0, x1), fx * (1 - fy))
    np.add.at(k, (y1, x0), (1 - fx) * fy)
    np.add.at(k, (y1, x1), fx * fy)
    return (k / k.sum()).astype(np.float32)


def _gaussian(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 standard normal noise from OpenCV's RNG, reseeded with ``seed``."""
    n = np.empty(shape, np.float32)
    cv2.setRNGSeed(int(seed) & 0x7FFFFFFF)
    cv2.randn(n, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return n


# --------------------------------------------------------------------------- degradations


def defocus(frame: np.ndarray, radius_frac: float = 0.012) -> np.ndarray:
    """Out-of-focus blur with a disk kernel.

    Args:
        frame: uint8[H, W, 3] RGB.
        radius_frac: disk radius as a fraction of min(H, W).  The default
            (7 px at 576 lines) wipes out the texture of objects under ~40 px
            while large objects keep their outline.

    Returns:
        uint8[H, W, 3].  Radii above 5 px are applied on a frame downscaled
        so the kernel stays within 11x11, then resized back (bilinear).
    """
    frame = _check_frame(frame)
    h, w = frame.shape[:2]
    radius = radius_frac * min(h, w)
    if radius < 0.5:
        return frame.copy()
    scale = max(1, math.ceil((2 * math.ceil(radius) + 1) / _MAX_SPATIAL_KERNEL))
    if scale == 1:
        return cv2.filter2D(frame, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)
    small_size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = cv2.resize(frame, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.filter2D(small, -1, disk_kernel(radius / scale), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def motion_blur(frame: np.ndarray, angle_deg: float = 0.0, length_frac: float = 0.04) -> np.ndarray:
    """Linear motion blur.

    Args:
        frame: uint8[H, W, 3] RGB.
        angle_deg: blur direction, counter-clockwise from +x.
        length_frac: streak length as a fraction of min(H, W).  The default
            (23 px at 576 lines) is a fast pan at a 1/30 s shutter.

    Returns:
        uint8[H, W, 3].  A streak longer than 10 px is split into n equal
        pieces: one short line kernel (<= 11x11) is convolved, then n copies
        shifted along the streak (rounded to whole pixels) are averaged.  The
        result is the full-length line up to those sub-pixel roundings.
    """
    frame = _check_frame(frame)
    h, w = frame.shape[:2]
    length = length_frac * min(h, w)
    if length < 1.0:
        return frame.copy()
    pieces = math.ceil(length / (_MAX_SPATIAL_KERNEL - 1))
    piece = length / pieces
    out = cv2.filter2D(frame, -1, line_kernel(piece, angle_deg), borderType=cv2.BORDER_REFLECT)
    if pieces == 1:
        return out
    theta = math.radians(angle_deg)
    steps = (np.arange(pieces) - (pieces - 1) / 2) * piece
    shifts = [(round(s * math.cos(theta)), round(-s * math.sin(theta))) for s in steps]
    pad = max(max(abs(dx), abs(dy)) for dx, dy in shifts)
    padded = cv2.copyMakeBorder(out, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    total = np.zeros(frame.shape, np.uint16)
    for dx, dy in shifts:
        cv2.add(total, padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w], dst=total, dtype=cv2.CV_16U)
    return cv2.convertScaleAbs(total, alpha=1.0 / pieces)


def noise(frame: np.ndarray, sigma: float = 20.0, shot: float = 2.0, seed: int = 0) -> np.ndarray:
    """Sensor noise: Gaussian read noise plus signal-dependent shot noise.

    Each channel value x becomes ``x + sqrt(sigma**2 + shot * x) * n`` with
    n ~ N(0, 1) independent per pixel and channel, rounded and clipped.

    Args:
        frame: uint8[H, W, 3] RGB.
        sigma: read-noise standard deviation in 8-bit levels.  20 is grainier
            than a phone at ISO 3200 in dim light.
        shot: shot-noise variance per level of signal (Poisson with a gain);
            2.0 adds std 16 at 128 and 23 at 255.
        seed: noise seed; the same seed gives the same noise.

    Returns:
        uint8[H, W, 3].
    """
    frame = _check_frame(frame)
    std_lut = np.sqrt(sigma**2 + shot * np.arange(256, dtype=np.float64)).astype(np.float32)
    delta = cv2.LUT(frame, std_lut)
    cv2.multiply(delta, _gaussian(frame.shape, seed), dst=delta)
    return cv2.add(frame, delta, dtype=cv2.CV_8U)


def jpeg(frame: np.ndarray, quality: int = 7) -> np.ndarray:
    """A JPEG round trip through OpenCV's encoder (4:2:0 chroma).

    Args:
        frame: uint8[H, W, 3] RGB.
        quality: JPEG quality 1-100.  5-10 gives the blocking and colour
            bleeding of a badly re-encoded web video.

    Returns:
        uint8[H, W, 3] RGB.
    """
    frame = _check_frame(frame)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write a JPEG")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def occluder_rect(shape: tuple[int, ...], box: Sequence[float]) -> tuple[int, int, int, int]:
    """The pixel rectangle an occluder covers.

    Args:
        shape: frame shape (H, W, ...).
        box: (cx, cy, w, h), centre and size as fractions of the frame width
            and height.

    Returns:
        (x1, y1, x2, y2) in integer pixels, clipped to the frame.
    """
    h, w = shape[:2]
    cx, cy, bw, bh = box
    pw, ph = round(bw * w), round(bh * h)
    x1 = min(max(round(cx * w - pw / 2), 0), max(w - pw, 0))
    y1 = min(max(round(cy * h - ph / 2), 0), max(h - ph, 0))
    return x1, y1, min(x1 + pw, w), min(y1 + ph, h)


def occluder(
    frame: np.ndarray,
    box: Sequence[float] = (0.5, 0.5, 0.5, 0.55),
    color: Sequence[int] = (90, 90, 90),
    texture_seed: int | None = None,
) -> np.ndarray:
    """An opaque rectangle in front of the scene (a passer-by, a post, a hand).

    Args:
        frame: uint8[H, W, 3] RGB.
        box: (cx, cy, w, h) as fractions of the frame width and height; the
            default covers 27.5% of the frame.  The rectangle is shifted to
            lie inside the frame.
        color: RGB fill of a flat occluder.
        texture_seed: when given, the patch is a smooth random texture (a
            coarse grid of random colours, bilinearly enlarged) that depends
            only on the seed, so an occluder keeps its look across a burst.

    Returns:
        uint8[H, W, 3].
    """
    frame = _check_frame(frame)
    x1, y1, x2, y2 = occluder_rect(frame.shape, box)
    out = frame.copy()
    if x2 <= x1 or y2 <= y1:
        return out
    if texture_seed is None:
        out[y1:y2, x1:x2] = np.asarray(color, np.uint8)
    else:
        rng = np.random.default_rng(texture_seed)
        cells = rng.integers(0, 256, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3), dtype=np.uint8)
        out[y1:y2, x1:x2] = cv2.resize(cells, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return out


def darkness(
    frame: np.ndarray, gain: float = 0.2, gamma: float = 1.8, sigma: float = 4.0, seed: int = 0
) -> np.ndarray:
    """An underexposed frame: ``255 * gain * (x / 255) ** gamma`` plus read noise.

    Args:
        frame: uint8[H, W, 3] RGB.
        gain: brightness of white after the curve; 0.2 maps 255 to 51.
        gamma: > 1 crushes the shadows; 1.8 with gain 0.2 maps mid-grey
            (128) to 15.
        sigma: Gaussian read-noise std in 8-bit levels after the curve,
            which is what makes dark frames hard rather than merely dim.
        seed: noise seed.

    Returns:
        uint8[H, W, 3].
    """
    frame = _check_frame(frame)
    levels = np.arange(256, dtype=np.float64) / 255.0
    dark = cv2.LUT(frame, (255.0 * gain * levels**gamma).astype(np.float32))
    if sigma > 0:
        cv2.scaleAdd(_gaussian(frame.shape, seed), float(sigma), dark, dst=dark)
    return cv2.convertScaleAbs(np.maximum(dark, 0, out=dark))


# --------------------------------------------------------------------------- schedule


class FrameSpec(NamedTuple):
    """What happens to one frame: ``kind`` is one of :data:`KINDS` or None
    (left clean); ``params`` are the keyword arguments of that function."""

    kind: str | None
    params: dict


CLEAN = FrameSpec(None, {})


@dataclass(frozen=True)
class Burst:
    """Frames ``start <= i < stop`` all get ``kind``."""

    start: int
    stop: int
    kind: str


@dataclass(frozen=True)
class DegradationRanges:
    """Per-burst parameter ranges, drawn uniformly.  Defaults aim at frames that
    are hard for a detector but that a person could still annotate."""

    defocus_radius_frac: tuple[float, float] = (0.008, 0.016)  # 4.6-9.2 px at 576 lines
    motion_length_frac: tuple[float, float] = (0.025, 0.06)  # 14-35 px at 576 lines; angle uniform
    noise_sigma: tuple[float, float] = (15.0, 30.0)  # 8-bit levels
    noise_shot: tuple[float, float] = (1.0, 3.0)  # variance per level
    jpeg_quality: tuple[int, int] = (5, 10)  # inclusive
    occluder_area: tuple[float, float] = (0.20, 0.35)  # fraction of the frame
    occluder_aspect: tuple[float, float] = (0.5, 2.0)  # w/h in frame-relative units, log-uniform
    occluder_speed: float = 0.02  # max drift per frame, fraction of the frame
    occluder_textured: float = 0.5  # probability of a textured patch
    dark_gain: tuple[float, float] = (0.12, 0.3)
    dark_gamma: tuple[float, float] = (1.5, 2.5)
    dark_sigma: tuple[float, float] = (2.0, 6.0)


def _reflect(x: float, lo: float, hi: float) -> float:
    """Fold x into [lo, hi] as a ball bouncing between the walls."""
    if hi <= lo:
        return lo
    period = 2 * (hi - lo)
    y = (x - lo) % period
    return lo + (y if y <= hi - lo else period - y)


def _burst_specs(kind: str, length: int, rng: np.random.Generator, r: DegradationRanges) -> list[FrameSpec]:
    def u(lo_hi):
        return float(rng.uniform(*lo_hi))

    def same(params: dict) -> list[FrameSpec]:
        return [FrameSpec(kind, dict(params)) for _ in range(length)]

    if kind == "defocus":
        return same({"radius_frac": u(r.defocus_radius_frac)})
    if kind == "motion_blur":
        params = {"angle_deg": float(rng.uniform(0.0, 180.0)), "length_frac": u(r.motion_length_frac)}
        return same(params)
    if kind == "jpeg":
        quality = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
        return same({"quality": quality})
    if kind in ("noise", "darkness"):
        if kind == "noise":
            params = {"sigma": u(r.noise_sigma), "shot": u(r.noise_shot)}
        else:
            params = {"gain": u(r.dark_gain), "gamma": u(r.dark_gamma), "sigma": u(r.dark_sigma)}
        first_seed = int(rng.integers(0, 2**31 - length))
        return [FrameSpec(kind, {**params, "seed": first_seed + i}) for i in range(length)]
    if kind == "occluder":
        area = u(r.occluder_area)
        aspect = math.exp(rng.uniform(*np.log(r.occluder_aspect)))
        bw, bh = min(math.sqrt(area * aspect), 0.95), min(math.sqrt(area / aspect), 0.95)
        cx, cy = rng.uniform(bw / 2, 1 - bw / 2), rng.uniform(bh / 2, 1 - bh / 2)
        heading = rng.uniform(0.0, 2 * math.pi)
        speed = rng.uniform(0.0, r.occluder_speed)
        vx, vy = speed * math.cos(heading), speed * math.sin(heading)
        style: dict = {"color": [int(c) for c in rng.integers(0, 256, 3)], "texture_seed": None}
        if rng.uniform() < r.occluder_textured:
            style["texture_seed"] = int(rng.integers(0, 2**31))
        return [
            FrameSpec(
                kind,
                {
                    "box": [
                        _reflect(cx + i * vx, bw / 2, 1 - bw / 2),
                        _reflect(cy + i * vy, bh / 2, 1 - bh / 2),
                        bw,
                        bh,
                    ],
                    **style,
                },
            )
            for i in range(length)
        ]
    raise ValueError(f"unknown degradation kind {kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class DegradationSchedule:
    """One :class:`FrameSpec` per frame of a video, and the bursts they form.

    A sequence: ``len(schedule)`` is the frame count and ``schedule[i]`` the
    spec of frame i.
    """

    specs: tuple[FrameSpec, ...]
    bursts: tuple[Burst, ...]

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[FrameSpec]:
        return iter(self.specs)

    def __getitem__(self, index: int) -> FrameSpec:
        return self.specs[index]

    def mask(self) -> np.ndarray:
        """bool[T]: True where a frame is degraded."""
        return np.array([s.kind is not None for s in self.specs], dtype=bool)

    @classmethod
    def clean(cls, num_frames: int) -> "DegradationSchedule":
        return cls((CLEAN,) * num_frames, ())

    @classmethod
    def sample(
        cls,
        num_frames: int,
        seed: int,
        fraction: float = 0.4,
        burst: tuple[int, int] = (3, 8),
        kinds: Sequence[str] = KINDS,
        ranges: DegradationRanges = DegradationRanges(),
    ) -> "DegradationSchedule":
        """Draw bursts covering about ``fraction`` of ``num_frames``.

        Burst lengths are uniform in ``burst`` (inclusive, capped at the frame
        count) and drawn until they reach ``round(fraction * num_frames)``; the
        last one is shortened to fit, or dropped when it would be shorter than
        ``burst[0]`` and less than half of it is still missing.  The clean
        frames are split at random into the gaps, at least one frame between
        bursts whenever the clean frames allow it.  Each burst's kind is
        uniform over ``kinds``.  The same arguments always give the same
        schedule.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        lo, hi = burst
        if not 1 <= lo <= hi:
            raise ValueError(f"burst must be (min, max) with 1 <= min <= max, got {burst}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
        rng = np.random.default_rng(seed)
        target = round(fraction * num_frames)
        hi = min(hi, num_frames)
        lengths: list[int] = []
        while target - sum(lengths) > 0 and hi >= 1:
            missing = target - sum(lengths)
            length = int(rng.integers(min(lo, hi), hi + 1))
            if length > missing:
                if missing >= lo:
                    length = missing
                elif 2 * missing >= min(lo, hi):
                    length = min(lo, hi)
                else:
                    break
            length = min(length, num_frames - sum(lengths))
            if length <= 0:
                break
            lengths.append(length)
        free = num_frames - sum(lengths)
        gaps = np.zeros(len(lengths) + 1, dtype=np.int64)
        if lengths:
            min_gap = 1 if free >= len(lengths) - 1 else 0
            gaps[1:-1] = min_gap
            spare = free - min_gap * (len(lengths) - 1)
            cuts = np.sort(rng.integers(0, spare + 1, size=len(lengths)))
            gaps += np.diff(np.concatenate([[0], cuts, [spare]]))
        else:
            gaps[0] = num_frames
        specs: list[FrameSpec] = []
        bursts: list[Burst] = []
        for gap, length in zip(gaps[:-1], lengths):
            specs.extend([CLEAN] * int(gap))
            kind = kinds[int(rng.integers(len(kinds)))]
            bursts.append(Burst(len(specs), len(specs) + length, kind))
            specs.extend(_burst_specs(kind, length, rng, ranges))
        specs.extend([CLEAN] * int(gaps[-1]))
        return cls(tuple(specs), tuple(bursts))


# --------------------------------------------------------------------------- applying


_FUNCTIONS = {
    "defocus": defocus,
    "motion_blur": motion_blur,
    "noise": noise,
    "jpeg": jpeg,
    "occluder": occluder,
    "darkness": darkness,
}


def apply(frame: np.ndarray, spec: FrameSpec | tuple) -> np.ndarray:
    """Apply one frame's spec.

    Args:
        frame: uint8[H, W, 3] RGB.
        spec: (kind, params) as in a :class:`DegradationSchedule`.

    Returns:
        A new uint8[H, W, 3] (a copy when ``kind`` is None).
    """
    kind, params = spec
    if kind is None:
        frame = _check_frame(frame)
        return frame.copy()
    if kind not in _FUNCTIONS:
        raise ValueError(f"unknown degradation kind {kind!r}; expected one of {KINDS}")
    return _FUNCTIONS[kind](frame, **params)


def degrade_frames(frames: Iterable[np.ndarray], schedule: Sequence[FrameSpec]) -> Iterator[np.ndarray]:
    """Stream frames through a schedule, one frame at a time.

    Args:
        frames: uint8[H, W, 3] RGB frames, frame i getting ``schedule[i]``.
        schedule: at least as many specs as frames.

    Yields:
        uint8[H, W, 3] frames; clean frames are the input objects themselves.

    Raises:
        ValueError: when the stream has more frames than the schedule.
    """
    specs = iter(schedule)
    for i, frame in enumerate(frames):
        spec = next(specs, None)
        if spec is None:
            raise ValueError(f"frame {i} has no spec: the schedule covers {i} frames")
        yield frame if spec[0] is None else apply(frame, spec)


def _to_numpy(frames) -> tuple[np.ndarray, object]:
    if isinstance(frames, np.ndarray):
        return frames, None
    return frames.detach().cpu().numpy(), frames


def _like(array: np.ndarray, original):
    if original is None:
        return array
    import torch

    return torch.from_numpy(array).to(original.device)


def degrade_clip(
    frames,
    seed: int,
    fraction: float = 0.4,
    burst: tuple[int, int] = (3, 8),
    kinds: Sequence[str] = KINDS,
    ranges: DegradationRanges = DegradationRanges(),
):
    """Degrade a clip with a freshly sampled schedule (for training).

    Args:
        frames: uint8 [T, H, W, 3] RGB, a numpy array or a torch tensor (any
            device; the work is done on the CPU).
        seed, fraction, burst, kinds, ranges: as in
            :meth:`DegradationSchedule.sample`.

    Returns:
        (degraded, schedule): ``degraded`` is a new array or tensor of the same
        type, shape, dtype and device, clean frames copied unchanged;
        ``schedule`` tells which frames were touched (``schedule.mask()``).
    """
    array, original = _to_numpy(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {array.dtype} {array.shape}")
    schedule = DegradationSchedule.sample(len(array), seed, fraction, burst, kinds, ranges)
    out = array.copy()
    for i, spec in enumerate(schedule):
        if spec.kind is not None:
            out[i] = apply(np.ascontiguousarray(array[i]), spec)
    return _like(out, original), schedule


# --------------------------------------------------------------------------- camera motion


def camera_motion_crop(frames, seed: int, max_zoom: float = 1.3, max_pan: float = 0.15):
    """Simulate a camera pan and zoom over a clip by cropping and resizing.

    The crop keeps the frame's aspect ratio and always lies inside the frame.
    Its size (1 / zoom, zoom uniform in [1, max_zoom]) and its centre move
    linearly from a random start to a random end: a constant-velocity pan with
    a steady zoom, smooth by construction.

    Args:
        frames: uint8 [T, H, W, 3] RGB, numpy array or torch tensor.
        seed: the same seed gives the same path.
        max_zoom: largest magnification, >= 1.
        max_pan: largest move of the crop centre over the clip, as a fraction
            of the frame width and height.

    Returns:
        (cropped, affines): ``cropped`` has the input's type, shape and dtype;
        ``affines`` float32[T, 2, 3] maps source coordinates to output
        coordinates, both in pixel-edge convention (the frame spans [0, W] x
        [0, H], as for xyxy boxes); see :func:`warp_boxes_xyxy`.
    """
    if max_zoom < 1:
        raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
    array, original = _to_numpy(frames)
    num, h, w = array.shape[:3]
    rng = np.random.default_rng(seed)
    u = rng.uniform(1 / max_zoom, 1.0, size=2)  # crop size / frame size, start and end
    d0 = rng.uniform(-(1 - u[0]) / 2, (1 - u[0]) / 2, size=2)  # crop centre offset (x, y), frame fractions
    d1 = np.clip(d0 + rng.uniform(-max_pan, max_pan, size=2), -(1 - u[1]) / 2, (1 - u[1]) / 2)
    affines = np.zeros((num, 2, 3), np.float32)
    out = np.empty_like(array)
    for i in range(num):
        t = i / (num - 1) if num > 1 else 0.0
        ui = (1 - t) * u[0] + t * u[1]
        di = (1 - t) * d0 + t * d1
        scale = 1.0 / ui
        x0 = (0.5 + di[0] - ui / 2) * w
        y0 = (0.5 + di[1] - ui / 2) * h
        affines[i] = [[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0]]
        # cv2 works on pixel centres: x_c = x_edge - 0.5 on both sides.
        shift = 0.5 * scale - 0.5
        centre = np.array([[scale, 0.0, shift - scale * x0], [0.0, scale, shift - scale * y0]])
        out[i] = cv2.warpAffine(
            np.ascontiguousarray(array[i]), centre, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    return _like(out, original), affines


def warp_boxes_xyxy(boxes: np.ndarray, affine: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map boxes through a crop affine from :func:`camera_motion_crop`.

    Args:
        boxes: float[N, 4] x1, y1, x2, y2 in source pixels.
        affine: float[2, 3] scale-and-translate matrix (no rotation).
        width, height: output frame size; boxes are clipped to it.

    Returns:
        float32[N, 4] x1, y1, x2, y2 in output pixels; a box that leaves the
        frame becomes zero-width or zero-height.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    a = np.asarray(affine, np.float64)
    out = np.empty_like(b)
    out[:, [0, 2]] = np.clip(b[:, [0, 2]] * a[0, 0] + a[0, 2], 0, width)
    out[:, [1, 3]] = np.clip(b[:, [1, 3]] * a[1, 1] + a[1, 2], 0, height)
    return out.astype(np.float32)
