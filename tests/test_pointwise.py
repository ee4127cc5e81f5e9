"""1x1 convolutions as matrix products equal nn.Conv2d (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidtag.ops.pointwise import pointwise, pointwise_cells


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_equals_conv(channels_last, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 7, 1, bias=bias).double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 12, 5, 6, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    want = conv(x)
    got = pointwise(x, conv)
    torch.testing.assert_close(got, want)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(want)
    g_want = torch.autograd.grad(want, (x, conv.weight), grad)
    g_got = torch.autograd.grad(got, (x, conv.weight), grad)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)


def test_pointwise_cells_rows_are_row_major_cells():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 3, 1).double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    rows = pointwise_cells(x, conv)
    assert rows.shape == (2, 15, 3)
    want = conv(x).flatten(2).transpose(1, 2)  # [B, H*W, C_out], row-major cells
    torch.testing.assert_close(rows, want)
    # cell (y=1, x=2) is row 1 * 5 + 2
    torch.testing.assert_close(rows[1, 7], conv.weight[:, :, 0, 0] @ x[1, :, 1, 2] + conv.bias)


def test_rejects_other_kernels():
    with pytest.raises(ValueError, match="plain 1x1"):
        pointwise(torch.zeros(1, 2, 4, 4), nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="plain 1x1"):
        pointwise_cells(torch.zeros(1, 2, 4, 4), nn.Conv2d(2, 2, 1, stride=2))
