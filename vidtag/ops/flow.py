"""Ops for feature flow (IFF-Net, Jin et al.; equations in ``docs/equations.md``).

* :func:`correlation`: the correlation layer of the advanced IFF module,
  ``o(x, y, k) = <F_i(x, y), F_j(x + dx_k, y + dy_k)> / C`` for the
  displacements ``dx, dy in {-D, -D + s, ..., D}`` (max displacement ``D``,
  stride ``s``; ``D = 10, s = 2`` gives ``(2 * 10 / 2 + 1) ** 2 = 121``
  channels).  Neighbours outside the map count as zero features (FlowNet's
  zero padding).  One shifted-slice product per displacement: memory is the
  ``[B, K, H, W]`` output, never a ``[B, C, K, H, W]`` gather.
* :func:`warp`: bilinear backward warping by a flow in feature cells:
  ``out(x, y) = F(x + u(x, y), y + v(x, y))``, so a constant flow ``(u, v) =
  (2, 0)`` moves the map's content 2 cells to the left (what was at x + 2 is
  now at x); samples outside the map read zeros.

Loop references for both live in ``tests/test_flow_ops.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["correlation", "correlation_displacements", "warp"]


def correlation_displacements(max_displacement: int = 10, stride: int = 2) -> list[tuple[int, int]]:
    """The (dy, dx) displacement of each output channel of :func:`correlation`, row-major in (dy, dx).

    Raises:
        ValueError: ``stride`` does not divide ``max_displacement``, or either is not positive.
    """
    if max_displacement < 0 or stride < 1 or max_displacement % stride:
        raise ValueError(f"need max_displacement >= 0 divisible by stride >= 1, got {max_displacement}, {stride}")
    steps = range(-max_displacement, max_displacement + 1, stride)
    return [(dy, dx) for dy in steps for dx in steps]


def correlation(first: Tensor, second: Tensor, max_displacement: int = 10, stride: int = 2) -> Tensor:
    """Correlation of ``first`` with displaced ``second``.

    Args:
        first (Tensor[B or 1, C, H, W]): ``F_i``, the current frame's feature
            (batch 1 is broadcast against all of ``second``).
        second (Tensor[B, C, H, W]): ``F_j``, the neighbours' features.
        max_displacement (int): ``D``, in cells.
        stride (int): step between displacements, in cells.

    Returns:
        Tensor[B, K, H, W]: channel k is ``sum_c first[:, c, y, x] * second[:, c,
        y + dy_k, x + dx_k] / C`` (0 where the neighbour is outside the map),
        ``K = (2 * D / stride + 1) ** 2``, in the order of
        :func:`correlation_displacements`; strided channels-last.

    One shifted-slice product per displacement, on channels-last copies of the
    inputs so that each dot product runs over contiguous memory (over a
    channel axis strided by H * W the same loop is much slower on CPU).
    """
    if first.ndim != 4 or second.ndim != 4 or first.shape[1:] != second.shape[1:] or first.shape[0] not in (1, second.shape[0]):
        raise ValueError(f"correlation needs [B or 1, C, H, W] and [B, C, H, W] maps of one size, got {tuple(first.shape)} and {tuple(second.shape)}")
    b, c, h, w = second.shape
    displacements = correlation_displacements(max_displacement, stride)
    mine = first.permute(0, 2, 3, 1).contiguous()  # [B or 1, H, W, C]
    theirs = second.permute(0, 2, 3, 1).contiguous()
    out = second.new_zeros((b, h, w, len(displacements)))
    for k, (dy, dx) in enumerate(displacements):
        y0, y1 = max(0, -dy), min(h, h - dy)
        x0, x1 = max(0, -dx), min(w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue  # the whole displacement leaves the map: stays zero
        a = mine[:, y0:y1, x0:x1]
        n = theirs[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        out[:, y0:y1, x0:x1, k] = torch.linalg.vecdot(a, n)
    return (out / c).permute(0, 3, 1, 2)


def warp(features: Tensor, flow: Tensor) -> Tensor:
    """Bilinear backward warp: ``out[:, :, y, x] = features[:, :, y + flow[:, 1, y, x], x + flow[:, 0, y, x]]``.

    Args:
        features (Tensor[B, C, H, W]): the map to sample.
        flow (Tensor[B, 2, H, W]): (u, v) = (dx, dy) in cells of ``features``.

    Returns:
        Tensor[B, C, H, W]: bilinear samples; zeros outside the map (cell
        centres are at integer coordinates, ``align_corners=True``).
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[-2:] != features.shape[-2:] or flow.shape[0] != features.shape[0]:
        raise ValueError(f"flow must be [B, 2, H, W] like features {tuple(features.shape)}, got {tuple(flow.shape)}")
    b, _, h, w = features.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype), torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij"
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True: -1 and +1 are the centres of the first and last cells
    gx = 2 * x / max(w - 1, 1) - 1
    gy = 2 * y / max(h - 1, 1) - 1
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(features, grid.to(features.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
