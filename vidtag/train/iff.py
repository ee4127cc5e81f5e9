"""Label-free training of the IFF-Net modules: distillation from the frozen NanoDet-g, plus TRL.

Per step, ``batch`` samples from :func:`sample_window_clip`: a current frame
t and two random neighbours from ``[t - 10, t + 10]`` (paper sect. 4.1:
"two frames are sampled randomly"), one camera-motion crop over the span and
a burst degradation schedule as for PSLA (:func:`vidtag.train.data.make_clip_pair`,
seeds below 1000).  For each sample:

1. teacher: NanoDet-g on the *clean* frames: the current frame's head output
   and head features (the distillation targets) and every frame's neck features;
2. student, on the *degraded* frames: per-frame features, the IFF flow of each
   neighbour, FGFA aggregation, NanoDet's head.  With ``match_window`` each of
   the N drawn neighbours counts as ``window / N`` frames in the softmax (an
   unbiased stand-in for the test window's sum over 20 neighbours), so the
   current frame's weight is learnt at the share it has at test time; the
   paper's recipe (off) trains a softmax over 3 frames and tests one over 21;
3. loss: :func:`vidtag.train.losses.distillation_loss` on the current frame,
   plus ``trl_weight`` (lambda, 0.65) times the TRL
   (:func:`vidtag.train.losses.transformation_residual_loss`): each clean
   neighbour warped with the student's flow against the clean current frame.
   The clean features, not the degraded ones, measure the alignment: a
   degradation of one frame is not a misalignment.

With ``labels`` the distillation terms give way to NanoDet's detection loss
on the current frame's boxes (TRL stays).  The optimisation loop is
:func:`vidtag.train.loop.run_schedule` (Adam, warm-up + cosine, clipping,
checkpoints, progress); everything random comes from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from vidtag.models.iff import IFFConfig, IFFDetector, build_iff
from vidtag.models.nanodet import NanoDet
from vidtag.ops.flow import warp
from vidtag.train.data import MAX_TRAIN_SEED, VideoFrames, draw_frame, make_clip_pair
from vidtag.train.loop import TrainResult, check_schedule, crop_targets, finish_training, prepare_training, seeded_model, to_input
from vidtag.train.losses import LossWeights, distillation_loss, transformation_residual_loss


@dataclass(frozen=True)
class WindowClip:
    """One IFF training sample (frame indices relative to the video's loaded range).

    Attributes:
        video (int): index into the list of :class:`VideoFrames`.
        current (int): the frame detected.
        neighbours (tuple[int, ...]): frames warped onto it (distinct, != current).
        crop_seed, degrade_seed (int): seeds below ``MAX_TRAIN_SEED``.
    """

    video: int
    current: int
    neighbours: tuple[int, ...]
    crop_seed: int
    degrade_seed: int

    @property
    def indices(self) -> tuple[int, ...]:
        """The clip's frames in time order (what :func:`make_clip_pair` returns)."""
        return tuple(sorted({self.current, *self.neighbours}))


def sample_window_clip(rng: np.random.Generator, lengths: list[int], radius: int = 10, count: int = 2) -> WindowClip:
    """Draw a current frame (videos in proportion to their length) and ``count``
    distinct neighbours uniformly from ``[t - radius, t + radius] \\ {t}`` inside the video."""
    video, t = draw_frame(rng, lengths)
    n = lengths[video]
    options = [j for j in range(t - radius, t + radius + 1) if j != t and 0 <= j < n]
    picked = rng.choice(len(options), size=min(count, len(options)), replace=False)
    crop_seed, degrade_seed = (int(s) for s in rng.integers(0, MAX_TRAIN_SEED, size=2))
    return WindowClip(video, t, tuple(sorted(options[int(k)] for k in picked)), crop_seed, degrade_seed)


@dataclass(frozen=True)
class IFFTrainConfig:
    """What to train on and how (the schedule fields mean what they mean in ``loop.TrainConfig``)."""

    videos: tuple[str, ...]
    frames: tuple[tuple[int, int], ...]  # per video (start, stop), half-open
    imgsz: int = 416
    steps: int = 1500
    batch: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    seed: int = 0
    iff: IFFConfig = IFFConfig()
    loss: LossWeights = LossWeights()
    degrade_fraction: float = 0.5
    camera_motion: bool = True
    radius: int = 10  # neighbours drawn from [t - radius, t + radius] (paper 10)
    neighbours: int = 2  # per sample (paper 2)
    match_window: bool = True  # each sampled neighbour counts as iff.window / neighbours frames in the softmax (False: the paper's)
    base_weights: str = "nanodet-g-coco"
    threads: int | None = None
    log_every: int = 10
    checkpoint: str | None = None
    checkpoint_every: int = 0
    time_limit_s: float | None = None
    labels: str | None = None

    def __post_init__(self):
        check_schedule(self)
        if self.radius < 1 or self.neighbours < 1:
            raise ValueError(f"radius and neighbours must be >= 1, got {self.radius}, {self.neighbours}")


def window_clip_loss(model: IFFDetector, clip: WindowClip, videos: list[VideoFrames], config: IFFTrainConfig, targets: dict | None = None) -> dict[str, Tensor]:
    """All loss terms of one sample (see the module doc); ``targets``: frame -> labelled boxes of this video."""
    if targets is None:
        clean, degraded = make_clip_pair(clip, videos, config.degrade_fraction, config.camera_motion)
        affines = None
    else:
        clean, degraded, affines = make_clip_pair(clip, videos, config.degrade_fraction, config.camera_motion, return_affines=True)
    x_clean, x_deg = to_input(clean, config.imgsz), to_input(degraded, config.imgsz)
    row = clip.indices.index(clip.current)
    others = [k for k in range(len(clip.indices)) if k != row]
    with torch.no_grad():
        clean_feats = model.neck_features(x_clean)
    student = model.frame_features(x_deg)
    counts = None
    if config.match_window:
        counts = torch.full((len(others),), config.iff.window / len(others))
    agg = model.aggregate(student.select([row]), student.select(others), counts)
    head_feats = model.head_features(agg.features)
    output = model.detector.head.predict(head_feats)
    if targets is None:
        with torch.no_grad():
            teacher_feats = model.head_features([f[row : row + 1] for f in clean_feats])
            teacher = model.detector.head.predict(teacher_feats)
        parts = distillation_loss(output, teacher, head_feats, teacher_feats, config.loss)
    else:
        from vidtag.train.supervised import detection_loss

        h, w = degraded.shape[1:3]
        parts = detection_loss(output, [crop_targets(targets.get(clip.current), affines[row], w, h, config.imgsz)])
    warped = [warp(f[others], flow) for f, flow in zip(clean_feats, agg.flows)]
    parts["trl"] = transformation_residual_loss(warped, [f[row : row + 1] for f in clean_feats])
    parts["total"] = parts["total"] + config.iff.trl_weight * parts["trl"]
    return parts


def build_iff_student(config: IFFTrainConfig, detector: NanoDet | None = None) -> IFFDetector:
    """NanoDet-g (frozen, eval) + fresh IFF modules from ``torch.manual_seed(config.seed)``."""
    return seeded_model(config, build_iff, config.iff, detector)


def train_iff(
    config: IFFTrainConfig,
    on_log: Callable[[dict], None] | None = None,
    detector: NanoDet | None = None,
    videos: list[VideoFrames] | None = None,
) -> TrainResult:
    """Train the IFF module and the embedding networks (see the module doc).

    Arguments and result as :func:`vidtag.train.loop.train_psla` (``result.model``
    is the :class:`IFFDetector`); the log dict has a ``trl`` part.

    Raises:
        ValueError: the labels do not fit the videos.
    """
    videos, load_s, model, targets = prepare_training(config, videos, lambda: build_iff_student(config, detector))
    lengths = [len(v.frames) for v in videos]

    def sample_loss(rng: np.random.Generator) -> dict[str, Tensor]:
        clip = sample_window_clip(rng, lengths, config.radius, config.neighbours)
        if targets is None:
            return window_clip_loss(model, clip, videos, config)
        while clip.current not in targets[clip.video]:
            clip = sample_window_clip(rng, lengths, config.radius, config.neighbours)
        return window_clip_loss(model, clip, videos, config, targets[clip.video])

    return finish_training(model, config, sample_loss, load_s, on_log)
