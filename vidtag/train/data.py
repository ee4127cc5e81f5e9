"""Training clips for label-free PSLA distillation: decode once, sample, degrade.

The frames of each training range are decoded once and kept in memory as
uint8, already downscaled to the size :func:`vidtag.models.preprocess.letterbox`
would give them at the training ``imgsz`` (so the letterbox only normalises and
pads).  At 320 that is 240x320x3 bytes a vtest frame: 91 MB for 397 frames.

A training sample (paper sect. 3.5, as in FGFA/DFF training) is a key frame
``k``, a non-key frame ``i`` of its segment (``1 <= |i - k| <= max_offset``)
and, for RFU, the previous key frame ``k - key_interval``.  The frames
``min .. max`` of that span go through one :func:`vidtag.degrade.camera_motion_crop`
(the same pan and zoom for the clean and the degraded copy, so teacher and
student see the same geometry); a :class:`vidtag.degrade.DegradationSchedule`
drawn over the span decides which of the chosen frames are degraded, so
degradations come in bursts as in the benchmark.  Crop and degradation seeds
are drawn below :data:`MAX_TRAIN_SEED`: the benchmark's are 1000 and above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidtag.degrade import DegradationSchedule, apply, camera_motion_crop

MAX_TRAIN_SEED = 1000  # benchmark degradation seeds start at 1000; training seeds stay below


@dataclass(frozen=True)
class VideoFrames:
    """The decoded training range of one video.

    Attributes:
        path (Path): the video file.
        start (int): first frame index of the range in the video.
        stop (int): one past the last frame index (half-open range).
        frames (np.ndarray uint8[N, h, w, 3]): RGB frames ``start .. stop - 1``,
            downscaled to the training size; ``N == stop - start``.
    """

    path: Path
    start: int
    stop: int
    frames: np.ndarray

    def __post_init__(self):
        f = self.frames
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[3] == 3):
            raise ValueError(f"frames must be uint8 [N, h, w, 3], got {getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
        if len(f) != self.stop - self.start:
            raise ValueError(f"{self.path}: {len(f)} frames for the range [{self.start}, {self.stop})")


SYNTH_SIZE = (640, 480)
"""Frame size of the synthetic clips made from still photos for training (before the letterbox)."""
SYNTH_FRAMES = 48
"""Frames of the synthetic clip a still photo gives when no frame range is asked for."""


def is_image(path: str | Path) -> bool:
    """Whether ``path`` is a still photo (by suffix): training makes a synthetic clip of it."""
    from vidtag.synth import IMAGE_SUFFIXES

    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _synthetic_frames(path: Path, start: int, stop: int, imgsz: int) -> VideoFrames:
    """Frames ``start .. stop - 1`` of the synthetic clip of a still photo (:func:`vidtag.synth.synth_clip`,
    seeded by the file name so the same photo always gives the same clip, below :data:`MAX_TRAIN_SEED`)."""
    import zlib

    import cv2

    from vidtag.ops.letterbox import plan_letterbox
    from vidtag.synth import load_image, synth_clip

    seed = zlib.crc32(path.name.encode()) % MAX_TRAIN_SEED
    clip = synth_clip(load_image(path), seed, stop, SYNTH_SIZE)[start:stop]
    _, (width, height) = plan_letterbox(SYNTH_SIZE, imgsz)
    frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in clip])
    return VideoFrames(path, start, stop, frames)


def load_frames(path: str | Path, start: int, stop: int, imgsz: int) -> VideoFrames:
    """Decode frames ``start <= i < stop`` of a video, downscaled for ``imgsz``; for a still
    photo (:func:`is_image`), those frames of its synthetic clip (camera motion, pasted objects).

    Decoding stops at ``stop``: frames after the range are never read into memory.

    Args:
        path: the video file.
        start, stop: half-open frame range, ``0 <= start < stop``.
        imgsz: training input size (longest side, a multiple of 32).

    Raises:
        ValueError: an empty range, or a range past the end of the video.
        vidtag.errors.VideoError: the file cannot be decoded.
    """
    import cv2

    from vidtag.io.decode import iter_chunks, probe
    from vidtag.ops.letterbox import plan_letterbox

    path = Path(path)
    if not 0 <= start < stop:
        raise ValueError(f"{path}: bad frame range [{start}, {stop})")
    if is_image(path):
        return _synthetic_frames(path, start, stop, imgsz)
    info = probe(path)
    if stop > info.num_frames:
        raise ValueError(f"{path}: frame range [{start}, {stop}) past the end ({info.num_frames} frames)")
    _, (width, height) = plan_letterbox((info.width, info.height), imgsz)
    kept: list[np.ndarray] = []
    chunks = iter_chunks(path, chunk_size=32, info=info)
    try:
        for chunk in chunks:
            lo, hi = max(start, chunk.start), min(stop, chunk.start + len(chunk))
            for frame in chunk.frames[lo - chunk.start : hi - chunk.start].numpy():
                if frame.shape[:2] != (height, width):
                    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                kept.append(frame)
            if chunk.start + len(chunk) >= stop:
                break
    finally:
        chunks.close()
    return VideoFrames(path, start, stop, np.stack(kept))


@dataclass(frozen=True)
class ClipSpec:
    """One training sample: which frames, and the seeds of its crop and degradations.

    Attributes:
        video (int): index into the list of :class:`VideoFrames`.
        prev_key (int | None): previous key frame (``key - key_interval``), or None.
        key (int): the key frame.
        nonkey (int): the non-key frame.
        crop_seed (int): seed of :func:`camera_motion_crop`, ``< MAX_TRAIN_SEED``.
        degrade_seed (int): seed of the degradation schedule, ``< MAX_TRAIN_SEED``.

    Frame indices are relative to the video's loaded range.
    """

    video: int
    prev_key: int | None
    key: int
    nonkey: int
    crop_seed: int
    degrade_seed: int

    @property
    def indices(self) -> tuple[int, ...]:
        """The clip's frames in time order (prev key first when there is one)."""
        return tuple(sorted({self.key, self.nonkey} | ({self.prev_key} if self.prev_key is not None else set())))


def draw_frame(rng: np.random.Generator, lengths: list[int]) -> tuple[int, int]:
    """(video, frame): the video drawn in proportion to its frame count, then a frame
    uniformly in it, so every loaded frame is equally likely.

    Raises:
        ValueError: no video, or one with fewer than 2 frames.
    """
    if not lengths or min(lengths) < 2:
        raise ValueError(f"every video needs at least 2 training frames, got {lengths}")
    p = np.asarray(lengths, np.float64)
    video = int(rng.choice(len(lengths), p=p / p.sum()))
    return video, int(rng.integers(0, lengths[video]))


def sample_clip(
    rng: np.random.Generator,
    lengths: list[int],
    key_interval: int = 10,
    max_offset: int = 5,
    prev_key_prob: float = 1.0,
) -> ClipSpec:
    """Draw one :class:`ClipSpec`; the same generator state gives the same clip.

    The video is drawn in proportion to its frame count (every key frame is
    equally likely); the key frame uniformly among those with a non-key
    neighbour; the non-key frame uniformly within ``max_offset`` of it; a
    previous key frame, when it exists, with probability ``prev_key_prob``.

    Args:
        rng: the sampling generator.
        lengths: loaded frames per video, each >= 2.
        key_interval: distance to the previous key frame (PSLAConfig.key_interval).
        max_offset: largest ``|nonkey - key|`` (half a segment: 5 for l = 10).
        prev_key_prob: probability of adding the previous key frame.
    """
    video, key = draw_frame(rng, lengths)
    n = lengths[video]
    offsets = [o for o in range(-max_offset, max_offset + 1) if o != 0 and 0 <= key + o < n]
    nonkey = key + offsets[int(rng.integers(len(offsets)))]
    prev = key - key_interval
    use_prev = bool(rng.uniform() < prev_key_prob)
    crop_seed, degrade_seed = (int(s) for s in rng.integers(0, MAX_TRAIN_SEED, size=2))
    return ClipSpec(video, prev if (use_prev and prev >= 0) else None, key, nonkey, crop_seed, degrade_seed)


def make_clip_pair(
    spec: ClipSpec,
    videos: list[VideoFrames],
    degrade_fraction: float = 0.5,
    camera_motion: bool = True,
    return_affines: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clean and degraded frames of a clip, same geometry.

    Args:
        spec: the sample.
        videos: the loaded training ranges.
        degrade_fraction: share of the span's frames in degradation bursts
            (DegradationSchedule.sample's ``fraction``).
        camera_motion: apply the pan-and-zoom crop (off: frames as decoded).
        return_affines: also return the crop of each frame (identity without
            camera motion), to move ground-truth boxes with it.

    Returns:
        (clean, degraded): uint8[T, h, w, 3] each, frames ``spec.indices`` in
        order; with ``return_affines`` also float32[T, 2, 3] source -> output
        pixel maps (see :func:`vidtag.degrade.warp_boxes_xyxy`).
    """
    frames = videos[spec.video].frames
    idx = spec.indices
    lo, hi = idx[0], idx[-1] + 1
    span = frames[lo:hi]
    affines = np.tile(np.eye(2, 3, dtype=np.float32), (len(span), 1, 1))
    if camera_motion:
        span, affines = camera_motion_crop(span, spec.crop_seed)
    schedule = DegradationSchedule.sample(len(span), spec.degrade_seed, fraction=degrade_fraction)
    clean = np.stack([span[i - lo] for i in idx])
    degraded = np.stack([apply(np.ascontiguousarray(span[i - lo]), schedule[i - lo]) for i in idx])
    if return_affines:
        return clean, degraded, np.stack([affines[i - lo] for i in idx])
    return clean, degraded
