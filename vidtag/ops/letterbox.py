"""Letterbox geometry: where a frame lies inside the network input.

Rectangular letterbox: the longest side is scaled to ``imgsz`` and the short
side is padded only up to the next multiple of 32, so a 640x272 frame becomes
a 416x192 input rather than a 416x416 canvas (less than half the pixels).
:class:`Letterbox` maps boxes between source and input pixels; the pixels
themselves are resized and normalised by :func:`vidtag.models.preprocess.letterbox`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

STRIDE_MULTIPLE = 32  # the coarsest pyramid level's stride


@dataclass(frozen=True)
class Letterbox:
    """How source frames were mapped onto the network input.

    ``input_xy = source_xy * scale + (pad_x, pad_y)``, the same scale on both
    axes.  Pixel coordinates are continuous, origin at the top-left corner of
    the top-left pixel.

    Attributes:
        scale (float): input pixels per source pixel.
        pad_x (int): columns of padding left of the image in the input.
        pad_y (int): rows of padding above the image in the input.
        source (tuple[int, int]): source frame (width, height).
        input (tuple[int, int]): network input (width, height), multiples of 32.
    """

    scale: float
    pad_x: int
    pad_y: int
    source: tuple[int, int]
    input: tuple[int, int]

    def to_source(self, boxes: Tensor) -> Tensor:
        """boxes (Tensor[..., 4]) xyxy in input pixels -> xyxy in source pixels (not clipped)."""
        offset = boxes.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        return (boxes - offset) / self.scale

    def to_input(self, boxes: Tensor) -> Tensor:
        """boxes (Tensor[..., 4]) xyxy in source pixels -> xyxy in input pixels."""
        offset = boxes.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        return boxes * self.scale + offset


def plan_letterbox(source_wh: tuple[int, int], imgsz: int = 416) -> tuple[Letterbox, tuple[int, int]]:
    """The letterbox geometry for one frame size, without touching pixels.

    Args:
        source_wh: (width, height) of the frames, positive.
        imgsz: target length of the longest side; a positive multiple of 32.

    Returns:
        (letterbox, (resized_w, resized_h)): the image occupies
        ``[pad_x, pad_x + resized_w) x [pad_y, pad_y + resized_h)`` of the input.

    Raises:
        ValueError: imgsz is not a positive multiple of 32, or a side is 0.
    """
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % STRIDE_MULTIPLE:
        raise ValueError(f"imgsz must be a positive multiple of {STRIDE_MULTIPLE}, got {imgsz!r}")
    width, height = int(source_wh[0]), int(source_wh[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    longest = max(width, height)
    scale = imgsz / longest
    # interpolate(scale_factor=s) makes floor(size * s) pixels; make sure the
    # longest side lands on imgsz exactly despite rounding in s.
    while math.floor(longest * scale) < imgsz:
        scale = math.nextafter(scale, math.inf)
    resized_w = max(1, math.floor(width * scale))
    resized_h = max(1, math.floor(height * scale))
    input_w = -(-resized_w // STRIDE_MULTIPLE) * STRIDE_MULTIPLE
    input_h = -(-resized_h // STRIDE_MULTIPLE) * STRIDE_MULTIPLE
    pad_x = (input_w - resized_w) // 2
    pad_y = (input_h - resized_h) // 2
    return Letterbox(scale, pad_x, pad_y, (width, height), (input_w, input_h)), (resized_w, resized_h)
