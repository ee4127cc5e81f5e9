"""What the three video detectors (frame, PSLA, IFF) share: their common fields,
the last video's shot starts and the check that a video keeps one frame size."""

from __future__ import annotations

import torch
from torch import Tensor

from vidtag.shots import ShotBoundaries


class VideoDetectorBase:
    """The fields and ``shot_starts`` of a :class:`vidtag.types.VideoDetector`;
    a subclass adds ``method`` and ``run``.

    Args:
        model: the network, in eval mode on ``device``.
        classes: the model's class names (index = label).
        options (build.DetectOptions): thresholds and input size.
        device: where the network runs.

    Attributes:
        shots (ShotBoundaries | None): the hard cuts of the video being run, or
            of the last one, which ``shot_starts`` reads; the subclass sets it
            while it runs a video.  None before the first.
    """

    shots: ShotBoundaries | None = None

    def __init__(self, model, classes: tuple[str, ...], options, device: torch.device | str = "cpu"):
        self.model = model
        self.classes = classes
        self.options = options
        self.device = torch.device(device)

    @property
    def shot_starts(self) -> list[int]:
        """Frames of the last video that start a new shot (after ``run``)."""
        return [] if self.shots is None else list(self.shots.starts)


def check_frame_shape(frames: Tensor, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """frames (Tensor[B, H, W, 3]) of a video whose earlier frames were ``shape``
    ((H, W, 3); None: these are its first) -> their shape (H, W, 3).

    Raises:
        ValueError: ``frames`` are not ``shape``: the frame size changed within a video.
    """
    found = tuple(frames.shape[1:])
    if shape is not None and found != shape:
        raise ValueError(f"frame size changed within a video: {shape} -> {found}")
    return found
