"""Frames -> network input: aspect-preserving resize, normalisation, padding.

The geometry (input size, scale, padding; :class:`vidtag.ops.letterbox.Letterbox`)
is :func:`vidtag.ops.letterbox.plan_letterbox`'s; this module moves the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtag.ops.letterbox import Letterbox, plan_letterbox
from vidtag.shots import thumbnails

# NanoDet's normalisation, in BGR channel order (nanodet config ``pipeline.normalize``).
BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)


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
        padding is 0 (the mean colour).  The resize is :func:`resize_for_input`'s.

    Raises:
        ValueError: bad imgsz, frames not [B, H, W, 3] uint8, or frames of
            neither the source size nor its resized size.
    """
    pixels, box = resize_for_input(frames, imgsz, source_wh)
    return normalise_and_pad(pixels, box), box


def resize_for_input(frames: Tensor, imgsz: int = 416, source_wh: tuple[int, int] | None = None) -> tuple[Tensor, Letterbox]:
    """The resize half of :func:`letterbox`: frames -> the image region of the network input.

    Args: as :func:`letterbox`.

    Returns:
        (pixels, letterbox): ``pixels`` Tensor[B, h, w, 3] RGB (channels-last
        strided), ``(w, h)`` the resized size :func:`plan_letterbox` gives;
        uint8 on the CPU, float32 elsewhere.  Downscaling is bilinear with
        antialiasing; upscaling plain bilinear.  On the CPU the resize runs on
        the uint8 pixels (torch's vectorised uint8 kernel, much faster than on
        floats; values differ by rounding, at most 1 of 255), elsewhere on
        floats.  Frames already of the resized size are returned as they are.

    Raises:
        ValueError: as :func:`letterbox`.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 [B, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    box, (resized_w, resized_h) = plan_letterbox(source_wh or (width, height), imgsz)
    if (width, height) not in ((resized_w, resized_h), box.source):
        raise ValueError(f"frames of {width}x{height} are neither the source size {box.source[0]}x{box.source[1]} "
                         f"nor its resized size {resized_w}x{resized_h}")
    if frames.device.type != "cpu":
        frames = frames.float()
    if (resized_w, resized_h) == (width, height):
        return frames, box
    x = F.interpolate(
        frames.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last),  # a no-op for the NHWC frames vidtag decodes
        scale_factor=box.scale,
        mode="bilinear",
        align_corners=False,
        antialias=box.scale < 1,
        recompute_scale_factor=False,
    )
    return x.permute(0, 2, 3, 1), box


def normalise_and_pad(pixels: Tensor, box: Letterbox) -> Tensor:
    """The other half of :func:`letterbox`: pixels (Tensor[B, h, w, 3] RGB, uint8 or
    float, from :func:`resize_for_input` with ``box``) -> Tensor[B, 3, H, W] float32,
    BGR, ``(x - BGR_MEAN) / BGR_STD``, padded with 0 to ``box.input``."""
    batch, resized_h, resized_w, _ = pixels.shape
    # (x - mean) / std as x * (1 / std) - mean / std: one fused pass from the
    # (uint8) pixels into the padded float input, RGB -> BGR by a flipped view
    scale = torch.tensor([1.0 / s for s in BGR_STD], device=pixels.device)
    shift = torch.tensor([-m / s for m, s in zip(BGR_MEAN, BGR_STD)], device=pixels.device)
    input_w, input_h = box.input
    out = torch.zeros((batch, input_h, input_w, 3), dtype=torch.float32, device=pixels.device)
    region = out[:, box.pad_y : box.pad_y + resized_h, box.pad_x : box.pad_x + resized_w]
    torch.addcmul(shift, pixels.flip(-1), scale, out=region)
    return out.permute(0, 3, 1, 2)


def pixel_thumbnails(pixels: Tensor) -> Tensor:
    """pixels (Tensor[B, h, w, 3] RGB, from :func:`resize_for_input`) -> Tensor[B, 576]:
    :func:`vidtag.shots.thumbnails` of the same frames normalised as the network sees
    them, i.e. ``frame_thumbnails(*letterbox(...))`` without making the network input.
    (The normalisation is per-channel affine and the thumbnail is zero-mean and
    pools linearly, so only the channels' 1 / std weights remain: the thumbnail of
    one grey channel, their weighted sum.)"""
    weights = torch.tensor([1.0 / s for s in BGR_STD[::-1]], device=pixels.device)
    grey = pixels.float() @ weights  # [B, h, w]
    return thumbnails(grey[:, None])
