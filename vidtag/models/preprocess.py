"""Frames -> network input: aspect-preserving resize, normalisation, padding.

Rectangular letterbox: the longest side is scaled to ``imgsz`` and the short
side is padded only up to the next multiple of 32, so a 640x272 frame becomes
a 416x192 input rather than a 416x416 canvas (less than half the pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# NanoDet's normalisation, in BGR channel order (nanodet config ``pipeline.normalize``).
BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)
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


def letterbox(frames: Tensor, imgsz: int = 416, source_wh: tuple[int, int] | None = None) -> tuple[Tensor, Letterbox]:
    """Resize, normalise and pad a batch of RGB frames for NanoDet.

    Args:
        frames (Tensor[B, H, W, 3] uint8): RGB frames on any device.
        imgsz (int): length of the longest side in the input, a positive
            multiple of 32.
        source_wh: the video's (width, height) when the decoder already
            scaled ``frames`` to the resized size :func:`plan_letterbox` gives
            for it (they are then only normalised and padded, and the
            letterbox maps boxes to the video's pixels); None: ``frames`` are
            the video's size.

    Returns:
        (inputs, letterbox): ``inputs`` Tensor[B, 3, h, w] float32 on the
        frames' device (channels-last strided), BGR, ``(x - BGR_MEAN) /
        BGR_STD``, where ``max(h, w) == imgsz`` and both are multiples of 32;
        padding is 0 (the mean colour).  Downscaling is bilinear with
        antialiasing; upscaling plain bilinear.  On CPU the resize runs on the
        uint8 pixels (torch's vectorised uint8 kernel, much faster than on
        floats; values differ by rounding, at most 1 of 255), elsewhere on
        floats.

    Raises:
        ValueError: bad imgsz, frames not [B, H, W, 3] uint8, or frames of
            neither the source size nor its resized size.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 [B, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    batch, height, width, _ = frames.shape
    box, (resized_w, resized_h) = plan_letterbox(source_wh or (width, height), imgsz)
    if (width, height) not in ((resized_w, resized_h), box.source):
        raise ValueError(f"frames of {width}x{height} are neither the source size {box.source[0]}x{box.source[1]} "
                         f"nor its resized size {resized_w}x{resized_h}")

    x = frames.permute(0, 3, 1, 2)  # RGB NHWC viewed as channels-last NCHW
    if frames.device.type != "cpu":
        x = x.float()
    if (resized_w, resized_h) != (width, height):
        x = F.interpolate(
            x.contiguous(memory_format=torch.channels_last),  # a no-op for the NHWC frames vidtag decodes
            scale_factor=box.scale,
            mode="bilinear",
            align_corners=False,
            antialias=box.scale < 1,
            recompute_scale_factor=False,
        )
    # (x - mean) / std as x * (1 / std) - mean / std: one fused pass from the
    # (uint8) pixels into the padded float input, RGB -> BGR by a flipped view
    scale = torch.tensor([1.0 / s for s in BGR_STD], device=frames.device)
    shift = torch.tensor([-m / s for m, s in zip(BGR_MEAN, BGR_STD)], device=frames.device)
    input_w, input_h = box.input
    out = torch.zeros((batch, input_h, input_w, 3), dtype=torch.float32, device=frames.device)
    region = out[:, box.pad_y : box.pad_y + resized_h, box.pad_x : box.pad_x + resized_w]
    torch.addcmul(shift, x.permute(0, 2, 3, 1).flip(-1), scale, out=region)
    return out.permute(0, 3, 1, 2), box
