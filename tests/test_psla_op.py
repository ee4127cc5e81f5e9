"""PSLA op (vidtag.ops.sampling) against a per-pixel reference: values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from vidtag.ops.sampling import PSLA, psla, psla_aggregate, psla_offsets, psla_weights

IMPLS = ("slices", "sparse")


def reference_psla(query_embed, memory_embed, memory, d, scale=None, offset_bias=None):
    """Plain loops over batch, cells and offsets (eq. 1-5 of the paper, as docs/equations.md writes them),
    plus ``offset_bias[k]`` on the logit of offset k when given.

    Returns (aligned [B, C2, H, W], weights [B, K, H, W] with 0 at positions outside the map).
    """
    b, c, h, w = query_embed.shape
    scale = 1.0 / math.sqrt(c) if scale is None else scale
    offsets = [(0, 0)]
    for s in range(1, d + 1):
        for a in (-s, 0, s):
            for bb in (-s, 0, s):
                if (a, bb) != (0, 0):
                    offsets.append((a, bb))
    out_rows, weight_rows = [], []
    for n in range(b):
        nm = n if memory.shape[0] > 1 else 0
        ne = n if memory_embed.shape[0] > 1 else 0
        out_cells, weight_cells = [], []
        for y in range(h):
            for x in range(w):
                ks, logits = [], []
                for k, (dy, dx) in enumerate(offsets):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        ks.append(k)
                        logit = (query_embed[n, :, y, x] * memory_embed[ne, :, y + dy, x + dx]).sum() * scale
                        logits.append(logit if offset_bias is None else logit + offset_bias[k])
                probs = torch.softmax(torch.stack(logits), 0)
                full = [query_embed.new_zeros(())] * len(offsets)
                acc = 0
                for k, p in zip(ks, probs):
                    full[k] = p
                    dy, dx = offsets[k]
                    acc = acc + p * memory[nm, :, y + dy, x + dx]
                out_cells.append(acc)
                weight_cells.append(torch.stack(full))
        out_rows.append(torch.stack(out_cells, 1).reshape(-1, h, w))
        weight_rows.append(torch.stack(weight_cells, 1).reshape(-1, h, w))
    return torch.stack(out_rows), torch.stack(weight_rows)


def test_offsets_pattern():
    assert psla_offsets(0) == [(0, 0)]
    offs = psla_offsets(4)
    assert len(offs) == 33 and offs[0] == (0, 0) and len(set(offs)) == 33
    for s in range(1, 5):
        ring = offs[1 + 8 * (s - 1) : 1 + 8 * s]
        assert set(ring) == {(a, b) for a in (-s, 0, s) for b in (-s, 0, s)} - {(0, 0)}
    with pytest.raises(ValueError):
        psla_offsets(-1)


# (B, C, C2, H, W, memory batch 1?) including maps smaller than d in one or both axes
SHAPES = [(2, 3, 2, 5, 6, False), (1, 4, 3, 3, 9, True), (2, 2, 2, 1, 4, False), (3, 3, 1, 7, 2, True)]


def _check_against_reference(impl, d, seed, with_bias):
    """psla (and psla_weights) against reference_psla on SHAPES: values and the
    gradients of a loss on both outputs; ``with_bias`` adds a random per-offset
    bias longer than K (its first K entries count) and returns its gradients."""
    gen = torch.Generator().manual_seed(seed)
    bias_grads = []
    for b, c, c2, h, w, shared in SHAPES:
        bm = 1 if shared else b
        tensors = [
            torch.randn(b, c, h, w, generator=gen, dtype=torch.float64),
            torch.randn(bm, c, h, w, generator=gen, dtype=torch.float64),
            torch.randn(bm, c2, h, w, generator=gen, dtype=torch.float64),
        ]
        if with_bias:
            tensors.append(3 * torch.randn(1 + 8 * (d + 2), generator=gen, dtype=torch.float64))
        fast_in = [t.clone().requires_grad_() for t in tensors]
        ref_in = [t.clone().requires_grad_() for t in tensors]
        fast_bias, ref_bias = (fast_in[3], ref_in[3]) if with_bias else (None, None)
        out, weights = psla(*fast_in[:3], max_displacement=d, return_weights=True, impl=impl, offset_bias=fast_bias)
        ref_out, ref_weights = reference_psla(*ref_in[:3], d, offset_bias=ref_bias)
        torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(weights, ref_weights, atol=1e-12, rtol=1e-10)
        if with_bias:
            torch.testing.assert_close(psla_weights(*tensors[:2], d, impl=impl, offset_bias=tensors[3]), ref_weights.detach())
        # gradients of a loss that depends on both outputs
        g_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        g_w = torch.randn(weights.shape, generator=gen, dtype=torch.float64)
        ((out * g_out).sum() + (weights * g_w).sum()).backward()
        ((ref_out * g_out).sum() + (ref_weights * g_w).sum()).backward()
        for fast, ref in zip(fast_in, ref_in):
            torch.testing.assert_close(fast.grad, ref.grad, atol=1e-10, rtol=1e-8)
        if with_bias:
            bias_grads.append(fast_bias.grad)
    return bias_grads


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
def test_matches_reference_values_and_gradients(impl, d):
    _check_against_reference(impl, d, 100 + d, with_bias=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", [1, 2, 4])
def test_offset_bias_matches_reference_values_and_gradients(impl, d):
    """A per-offset logit bias (longer than K: its first K entries count), borders included."""
    for grad in _check_against_reference(impl, d, 200 + d, with_bias=True):
        assert grad[1 + 8 * d :].abs().max() == 0  # entries past K are not used
        assert grad[: 1 + 8 * d].abs().max() > 0


def test_offset_bias_too_short_is_refused():
    x = torch.zeros(1, 2, 4, 5)
    with pytest.raises(ValueError, match="offset_bias"):
        psla(x, x, x, 2, offset_bias=torch.zeros(9))  # d = 2 needs 17


def test_module_offset_prior_starts_as_a_copy_and_is_saved():
    """With a large prior a fresh module returns the memory itself; without one it has no bias parameter."""
    torch.manual_seed(5)
    assert PSLA(8, 4, 2).offset_bias is None and "offset_bias" not in PSLA(8, 4, 2).state_dict()
    module = PSLA(8, 4, max_displacement=3, offset_prior=30.0)
    assert module.offset_bias.shape == (1 + 8 * PSLA.MAX_DISPLACEMENT,)
    assert "offset_bias" in module.state_dict()
    query, memory = torch.randn(2, 8, 6, 7), torch.randn(1, 8, 6, 7)
    out, weights = module(query, memory, return_weights=True)
    assert weights[:, 0].min() > 0.999
    torch.testing.assert_close(out, memory.expand(2, -1, -1, -1), atol=1e-3, rtol=0)
    mild = PSLA(8, 4, max_displacement=4, offset_prior=4.0)  # e^4 / (e^4 + 32) ~ 0.63 where embeddings are neutral
    _, weights = mild(torch.zeros(1, 8, 9, 9), torch.zeros(1, 8, 9, 9), return_weights=True)
    torch.testing.assert_close(weights[0, 0, 4, 4], torch.tensor(math.exp(4) / (math.exp(4) + 32)))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    gen = torch.Generator().manual_seed(7)
    args = [torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda q, m, v: psla(q, m, v, 2, impl=impl), args, fast_mode=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_weights_sum_to_one_over_valid_positions(impl):
    torch.manual_seed(0)
    d, h, w = 4, 6, 11
    q, m = torch.randn(2, 8, h, w), torch.randn(2, 8, h, w)
    weights = psla_weights(q, m, d, impl=impl)
    assert weights.shape == (2, 33, h, w)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, h, w))
    for k, (dy, dx) in enumerate(psla_offsets(d)):
        ys = torch.arange(h).view(-1, 1) + dy
        xs = torch.arange(w).view(1, -1) + dx
        outside = (ys < 0) | (ys >= h) | (xs < 0) | (xs >= w)
        assert (weights[:, k][:, outside] == 0).all()  # masked, not zero-padded
        assert (weights[:, k][:, ~outside] > 0).all()
    # a corner cell sees only the offsets with a, b >= 0: 1 + 3 * d positions
    assert int((weights[0, :, 0, 0] > 0).sum()) == 1 + 3 * d


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shift", [(0, 0), (1, -1), (0, 3), (-4, 4), (2, 0)])
def test_known_shift_is_recovered(impl, shift):
    """Query = memory shifted by (dy, dx): the weight peaks on that offset and the
    output is the memory read there."""
    torch.manual_seed(1)
    dy, dx = shift
    h, w, d = 12, 13, 4
    feat = torch.nn.functional.normalize(torch.randn(1, 16, h + 8, w + 8), dim=1)
    memory = feat[:, :, 4 : 4 + h, 4 : 4 + w]
    query = feat[:, :, 4 + dy : 4 + dy + h, 4 + dx : 4 + dx + w]  # query(p) = memory(p + shift)
    aligned, weights = psla(query, memory, memory, d, scale=60.0, return_weights=True, impl=impl)
    k = psla_offsets(d).index(shift)
    inner = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    assert weights[0, k][inner].min() > 0.99
    torch.testing.assert_close(aligned[..., inner[0], inner[1]], query[..., inner[0], inner[1]], atol=1e-2, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_aggregate_alone_and_float32(impl):
    torch.manual_seed(2)
    q, m, v = torch.randn(3, 4, 9, 10), torch.randn(1, 4, 9, 10), torch.randn(1, 6, 9, 10)
    weights = psla_weights(q, m, 3, impl=impl)
    out = psla_aggregate(weights, v, 3, impl=impl)
    ref, _ = reference_psla(q.double(), m.double(), v.double(), 3)
    assert out.dtype == torch.float32 and out.shape == (3, 6, 9, 10)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    x = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError):
        psla(x, torch.zeros(2, 3, 4, 6), x)
    with pytest.raises(ValueError):
        psla(x, torch.zeros(3, 3, 4, 5), torch.zeros(3, 3, 4, 5))
    with pytest.raises(ValueError):
        psla_aggregate(torch.zeros(2, 9, 4, 5), x, 2)  # 9 channels is d = 1, not 2
    with pytest.raises(ValueError):
        psla(x, x, x, impl="fast")


def test_module_embeddings_and_cache():
    torch.manual_seed(3)
    module = PSLA(8, 4, max_displacement=2)
    assert torch.equal(module.f.weight, module.g.weight) and torch.equal(module.f.bias, module.g.bias)
    query, memory = torch.randn(3, 8, 6, 7), torch.randn(1, 8, 6, 7)
    out, weights = module(query, memory, return_weights=True)
    assert out.shape == (3, 8, 6, 7) and weights.shape == (3, 17, 6, 7)
    cached = module(query, memory, memory_embed=module.embed_memory(memory))
    torch.testing.assert_close(out, cached)
    ref, _ = reference_psla(module.g(query).double(), module.f(memory).double(), memory.double(), 2)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(4)
    q, m, v = torch.randn(2, 8, 20, 26), torch.randn(1, 8, 20, 26), torch.randn(1, 16, 20, 26)
    cpu_out, cpu_w = psla(q, m, v, 4, return_weights=True)
    gpu_out, gpu_w = psla(q.cuda(), m.cuda(), v.cuda(), 4, return_weights=True)  # auto -> slices on CUDA
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu_w.cpu(), cpu_w, atol=1e-5, rtol=1e-4)
