"""Feature-flow ops (IFF-Net): correlation and bilinear warp against per-cell loop references."""

from __future__ import annotations

import math

import pytest
import torch

from vidtag.ops.flow import correlation, correlation_displacements, warp


def correlation_reference(first, second, d, s):
    b, c, h, w = first.shape
    steps = list(range(-d, d + 1, s))
    out = torch.zeros(b, len(steps) ** 2, h, w, dtype=first.dtype)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                k = 0
                for dy in steps:
                    for dx in steps:
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            out[n, k, y, x] = (first[n, :, y, x] * second[n, :, yy, xx]).sum() / c
                        k += 1
    return out


def test_paper_shape_121_channels():
    assert len(correlation_displacements(10, 2)) == 121
    out = correlation(torch.randn(1, 8, 6, 7), torch.randn(1, 8, 6, 7), 10, 2)
    assert out.shape == (1, 121, 6, 7)
    with pytest.raises(ValueError, match="divisible"):
        correlation_displacements(5, 2)


@pytest.mark.parametrize("d, s", [(2, 1), (4, 2), (10, 2)])
def test_correlation_matches_reference_values_and_gradients(d, s):
    torch.manual_seed(d)
    a = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    fast, ref = correlation(a, b, d, s), correlation_reference(a, b, d, s)
    torch.testing.assert_close(fast, ref)
    grad = torch.randn_like(ref)
    g_fast = torch.autograd.grad(fast, (a, b), grad)
    g_ref = torch.autograd.grad(ref, (a, b), grad)
    for x, y in zip(g_fast, g_ref):
        torch.testing.assert_close(x, y)


def test_correlation_broadcasts_a_single_current_frame():
    torch.manual_seed(1)
    a = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    fast = correlation(a, b, 4, 2)
    ref = correlation_reference(a.expand(3, -1, -1, -1), b, 4, 2)
    torch.testing.assert_close(fast, ref)
    grad = torch.randn_like(ref)
    for x, y in zip(torch.autograd.grad(fast, (a, b), grad), torch.autograd.grad(ref, (a, b), grad)):
        torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="one size"):
        correlation(torch.randn(2, 4, 5, 6), b)


def test_correlation_peaks_at_the_true_displacement():
    torch.manual_seed(0)
    second = torch.randn(1, 16, 12, 12)
    first = torch.roll(second, shifts=(-2, 4), dims=(2, 3))  # first(y, x) = second(y + 2, x - 4)
    out = correlation(first, second, 6, 2)
    best = out[0, :, 4:8, 4:8].mean(dim=(1, 2)).argmax()  # cells away from the borders
    assert correlation_displacements(6, 2)[best] == (2, -4)


def bilinear_reference(features, flow):
    b, c, h, w = features.shape
    out = torch.zeros_like(features)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                sx, sy = x + float(flow[n, 0, y, x].detach()), y + float(flow[n, 1, y, x].detach())
                x0, y0 = math.floor(sx), math.floor(sy)
                for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                    for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[n, :, y, x] += wy * wx * features[n, :, yy, xx]
    return out


def test_integer_shift_moves_features_by_exactly_that_shift():
    torch.manual_seed(1)
    f = torch.randn(1, 4, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample 2 cells right, 1 cell up
    out = warp(f, flow)
    torch.testing.assert_close(out[:, :, 1:, :6], f[:, :, :5, 2:])
    # sampled outside the map: zeros (up to the float rounding of the normalised grid)
    torch.testing.assert_close(out[:, :, 0], torch.zeros_like(out[:, :, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, :, 6:], torch.zeros_like(out[:, :, :, 6:]), atol=1e-6, rtol=0)


def test_half_cell_shift_averages_neighbours():
    f = torch.arange(12.0).reshape(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 0] = 0.5
    out = warp(f, flow)
    torch.testing.assert_close(out[0, 0, :, :3], (f[0, 0, :, :3] + f[0, 0, :, 1:]) / 2)


def test_warp_matches_bilinear_reference_with_gradients():
    torch.manual_seed(2)
    f = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (torch.randn(2, 2, 5, 6, dtype=torch.float64) * 1.5).requires_grad_()
    fast, ref = warp(f, flow), bilinear_reference(f, flow)
    torch.testing.assert_close(fast, ref)
    grad = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(fast, f, grad)[0], torch.autograd.grad(ref, f, grad)[0])
    assert torch.autograd.gradcheck(lambda fl: warp(f.detach(), fl), (flow,), fast_mode=True)
