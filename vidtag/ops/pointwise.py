"""1x1 convolutions as matrix products on channels-last maps.

A 1x1 convolution is a matrix product over channels at every cell.  On CPU,
PyTorch sends a 1x1 ``nn.Conv2d`` on a channels-last map to its slow
reference kernel (``_slow_conv2d_forward``: an im2col copy, a GEMM, a copy
back); on the ``[B, H, W, C]`` view of the same memory it is one GEMM.
The head, the neck and the PSLA modules use these on their channels-last maps.

Both functions take the weights of an ``nn.Conv2d`` with ``kernel_size=1``,
``stride=1``, no padding and no groups, and give the same values as calling it
(up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["pointwise", "pointwise_cells", "pointwise_pair"]


def _check(conv: nn.Conv2d) -> None:
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), "valid"):
        raise ValueError(f"pointwise needs a plain 1x1 conv, got {conv}")


def pointwise_cells(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """x (Tensor[B, C, H, W], any memory format) -> Tensor[B, H*W, C_out], cells row-major.

    The layout a detection head wants: one row of outputs per cell.
    """
    _check(conv)
    b, c, h, w = x.shape
    weight = conv.weight.reshape(conv.out_channels, c)
    return F.linear(x.permute(0, 2, 3, 1), weight, conv.bias).reshape(b, h * w, conv.out_channels)


def pointwise(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """x (Tensor[B, C, H, W]) -> Tensor[B, C_out, H, W], ``conv(x)``.

    Channels-last input gives a channels-last result through one GEMM;
    other layouts go through ``conv`` itself (oneDNN handles those well).
    """
    _check(conv)
    if not _channels_last(x):
        return conv(x)
    weight = conv.weight.reshape(conv.out_channels, x.shape[1])
    return F.linear(x.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)


def pointwise_pair(first: Tensor, second: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(cat(first, second, dim=1))`` without the concatenated copy: two
    products on the halves of the weight (``first`` may have batch 1 and broadcast).

    first, second (Tensor[B or 1, C, H, W]) -> Tensor[B, C_out, H, W].
    """
    _check(conv)
    c = first.shape[1]
    if _channels_last(first) and _channels_last(second):
        weight = conv.weight.reshape(conv.out_channels, 2 * c)
        y = F.linear(second.permute(0, 2, 3, 1), weight[:, c:], conv.bias) + F.linear(first.permute(0, 2, 3, 1), weight[:, :c])
        return y.permute(0, 3, 1, 2)
    return F.conv2d(first, conv.weight[:, :c]) + F.conv2d(second, conv.weight[:, c:], conv.bias)


def _channels_last(x: Tensor) -> bool:
    """Channels-last strided (and not also plain contiguous, as 1x1 maps are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

