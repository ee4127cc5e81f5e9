"""Sampling ops between two feature maps: sparse local attention (PSLA).

PSLA (Guo et al., ICCV 2019, sect. 3.2; the equations as vidtag reads them
are in ``docs/equations.md``) aligns a memory feature map to a query frame.
For every cell ``p`` of the query it compares the query embedding at ``p``
with the memory embedding at ``1 + 8 * d`` positions ``p + o`` (the centre,
then rings at strides ``s = 1..d`` with ``a, b in {-s, 0, s}``), normalises
the affinities with a softmax over the positions that lie inside the map, and
returns the weighted sum of the *un-embedded* memory at those positions.

Two fast forms give the same values and gradients; neither ever holds a
``[B, C, K, H, W]`` gather:

* ``"slices"``: a loop over the K offsets with shifted slices (``vecdot`` for
  the affinities, ``addcmul_`` into the output).  Holds the ``[B, K, H, W]``
  weights and the output.  Any device.
* ``"sparse"``: the neighbourhood as a CSR matrix with K distinct entries per
  row (outside cells point at K extra zero columns, masked to weight 0);
  affinities by one ``sampled_addmm``, aggregation by one sparse-dense
  product.  Holds ``K * B * H * W`` values and indices.  CPU only, where it
  is the faster of the two.

An optional learnt *offset bias* (one logit per offset, the same at every
cell; not in the paper) is added to the affinities before the softmax: a
prior on where the match lies, which :class:`PSLA` can start at "the same
cell" so that a fresh module copies the memory instead of blurring it.

A per-pixel reference lives in ``tests/test_psla_op.py``.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor, nn

from vidtag.ops.pointwise import pointwise

__all__ = ["PSLA", "psla", "psla_affinities", "psla_aggregate", "psla_offsets", "psla_weights"]



def psla_offsets(max_displacement: int = 4) -> list[tuple[int, int]]:
    """The sparse neighbourhood of PSLA, ``1 + 8 * d`` (dy, dx) offsets in cells.

    Order: the centre ``(0, 0)`` first, then for ``s = 1..d`` the ring
    ``{(a, b) : a, b in {-s, 0, s}} minus (0, 0)`` in row-major order of (a, b).
    The order fixes the channel order of :func:`psla_weights`.

    Raises:
        ValueError: ``max_displacement`` is not a non-negative int.
    """
    if not isinstance(max_displacement, int) or max_displacement < 0:
        raise ValueError(f"max_displacement must be a non-negative int, got {max_displacement!r}")
    offsets = [(0, 0)]
    for s in range(1, max_displacement + 1):
        offsets.extend((a, b) for a in (-s, 0, s) for b in (-s, 0, s) if (a, b) != (0, 0))
    return offsets


def _overlap(size: int, shift: int) -> tuple[int, int]:
    """Query cells ``[lo, hi)`` along one axis whose neighbour ``i + shift`` is inside ``[0, size)``."""
    return max(0, -shift), min(size, size - shift)


IMPLS = ("auto", "slices", "sparse")


def _resolve_impl(impl: str, device: torch.device) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "sparse" and device.type != "cpu":
        raise ValueError("impl='sparse' runs on the CPU only (it relies on unsorted CSR rows); use 'slices'")
    if impl == "auto":
        return "sparse" if device.type == "cpu" else "slices"
    return impl


def psla_weights(
    query_embed: Tensor,
    memory_embed: Tensor,
    max_displacement: int = 4,
    scale: float | None = None,
    impl: str = "auto",
    offset_bias: Tensor | None = None,
) -> Tensor:
    """Correspondence weights of PSLA (eq. 1-4).

    Args:
        query_embed (Tensor[B, C, H, W]): ``g(F^{t+e})``, the embedded query.
        memory_embed (Tensor[B or 1, C, H, W]): ``f(F^t)``, the embedded memory
            (batch 1 broadcasts over the query batch).
        max_displacement (int): ``d``; ``K = 1 + 8 * d`` positions.
        scale (float | None): affinities are multiplied by it before the
            softmax; None means ``1 / sqrt(C)``.  The paper uses no scale, but
            the learnt 1x1 embeddings can absorb any constant, and with it the
            logits of freshly initialised embeddings stay O(1) instead of O(C)
            so the softmax does not start saturated (the Transformer argument).
        impl (str): "slices" (a loop over the K offsets with shifted slices;
            any device), "sparse" (one sampled sparse-dense product; CPU only,
            faster there) or "auto" (sparse on CPU, else slices).
            Same values and gradients.
        offset_bias (Tensor[K'] | None): added to the (scaled) affinity of
            offset k, ``K' >= K`` (the first K entries are used, so a bias made
            for a larger d serves a smaller one); None adds nothing.

    Returns:
        Tensor[B, K, H, W]: channel k is the weight of memory cell
        ``p + psla_offsets(d)[k]`` for query cell p; 0 where that cell is
        outside the map; sums to 1 over k.  Same dtype as the inputs; the
        sparse impl returns it channels-last strided.
    """
    _check_pair(query_embed, memory_embed, "memory_embed")
    if scale is None:
        scale = 1.0 / math.sqrt(query_embed.shape[1])
    offset_bias = _check_bias(offset_bias, max_displacement)
    if _resolve_impl(impl, query_embed.device) == "sparse":
        b, _, h, w = query_embed.shape
        values = _sparse_weights(query_embed, memory_embed, max_displacement, scale, offset_bias)
        return _sorted_to_offsets(values, b, h, w, max_displacement)
    return _slice_weights(query_embed, memory_embed, max_displacement, scale, offset_bias)


def psla_aggregate(weights: Tensor, memory: Tensor, max_displacement: int = 4, impl: str = "auto") -> Tensor:
    """Weighted sum of memory cells over the PSLA neighbourhood (eq. 5).

    Args:
        weights (Tensor[B, K, H, W]): from :func:`psla_weights`, ``K = 1 + 8 * d``.
        memory (Tensor[B or 1, C, H, W]): ``F^t``, the un-embedded memory.
        max_displacement (int): ``d``, the one ``weights`` were made with.
        impl (str): as in :func:`psla_weights`.

    Returns:
        Tensor[B, C, H, W]: ``out[:, :, p] = sum_k weights[:, k, p] * memory[:, :, p + o_k]``
        (channels-last strided from the sparse impl).
    """
    k_count = len(psla_offsets(max_displacement))
    if weights.ndim != 4 or weights.shape[1] != k_count:
        raise ValueError(f"weights must be [B, {k_count}, H, W] for d={max_displacement}, got {tuple(weights.shape)}")
    _check_pair(weights[:, :1], memory[:, :1], "memory")
    if _resolve_impl(impl, weights.device) == "sparse":
        return _sparse_aggregate(_offsets_to_sorted(weights, max_displacement), memory, max_displacement, weights.shape[0])
    return _slice_aggregate(weights, memory, max_displacement)


def psla(
    query_embed: Tensor,
    memory_embed: Tensor,
    memory: Tensor,
    max_displacement: int = 4,
    scale: float | None = None,
    return_weights: bool = False,
    impl: str = "auto",
    offset_bias: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Progressive sparse local attention: align ``memory`` to the query frame.

    Args:
        query_embed (Tensor[B, C, H, W]): embedded query feature ``g(F^{t+e})``.
        memory_embed (Tensor[B or 1, C, H, W]): embedded memory ``f(F^t)``.
        memory (Tensor[B or 1, C2, H, W]): the memory ``F^t`` itself, same
            batch as ``memory_embed``.
        max_displacement (int): ``d`` (paper default 4: 33 positions).
        scale (float | None): affinity scale, see :func:`psla_weights`.
        return_weights (bool): also return the weights.
        impl (str): "auto", "slices" or "sparse", see :func:`psla_weights`.
        offset_bias (Tensor[K'] | None): per-offset logit bias, see :func:`psla_weights`.

    Returns:
        Tensor[B, C2, H, W] (and the Tensor[B, K, H, W] weights if asked):
        ``F^^{t+e}``, the memory aligned to the query.
    """
    _check_pair(query_embed, memory_embed, "memory_embed")
    _check_pair(query_embed[:, :1], memory[:, :1], "memory")
    if memory.shape[0] != memory_embed.shape[0]:
        raise ValueError(f"PSLA: memory batch {memory.shape[0]} != memory_embed batch {memory_embed.shape[0]}")
    if scale is None:
        scale = 1.0 / math.sqrt(query_embed.shape[1])
    offset_bias = _check_bias(offset_bias, max_displacement)
    if _resolve_impl(impl, query_embed.device) == "sparse":
        b, _, h, w = query_embed.shape
        values = _sparse_weights(query_embed, memory_embed, max_displacement, scale, offset_bias)
        aligned = _sparse_aggregate(values, memory, max_displacement, b)
        weights = _sorted_to_offsets(values, b, h, w, max_displacement) if return_weights else None
    else:
        weights = _slice_weights(query_embed, memory_embed, max_displacement, scale, offset_bias)
        aligned = _slice_aggregate(weights, memory, max_displacement)
    return (aligned, weights) if return_weights else aligned


# --- shifted slices: K small kernels per call, any device ---------------------


def _slice_weights(query_embed: Tensor, memory_embed: Tensor, max_displacement: int, scale: float, offset_bias: Tensor | None) -> Tensor:
    return psla_affinities(query_embed, memory_embed, max_displacement, scale, offset_bias).softmax(dim=1)


def psla_affinities(
    query_embed: Tensor, memory_embed: Tensor, max_displacement: int = 4, scale: float = 1.0, offset_bias: Tensor | None = None
) -> Tensor:
    """The logits PSLA's softmax takes, before it: ``scale * <q(p), m(p + o_k)> + offset_bias[k]``.

    Args:
        query_embed (Tensor[B, C, H, W]), memory_embed (Tensor[B or 1, C, H, W]): as in :func:`psla_weights`.
        max_displacement (int): ``d``; ``K = 1 + 8 * d`` offsets (:func:`psla_offsets`).
        scale (float): multiplies the inner products.
        offset_bias (Tensor[K'] | None): added to offset k's logit (first K entries).

    Returns:
        Tensor[B, K, H, W]: ``-inf`` where ``p + o_k`` is outside the map.
    """
    _check_pair(query_embed, memory_embed, "memory_embed")
    offset_bias = _check_bias(offset_bias, max_displacement)
    b, _, h, w = query_embed.shape
    offsets = psla_offsets(max_displacement)
    logits = query_embed.new_full((b, len(offsets), h, w), float("-inf"))
    for k, (dy, dx) in enumerate(offsets):
        y0, y1 = _overlap(h, dy)
        x0, x1 = _overlap(w, dx)
        if y0 >= y1 or x0 >= x1:
            continue  # the whole ring position falls outside a small map: stays masked
        q = query_embed[:, :, y0:y1, x0:x1]
        m = memory_embed[:, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        logit = torch.linalg.vecdot(q, m, dim=1) * scale
        logits[:, k, y0:y1, x0:x1] = logit if offset_bias is None else logit + offset_bias[k]
    return logits


def _slice_aggregate(weights: Tensor, memory: Tensor, max_displacement: int) -> Tensor:
    b, _, h, w = weights.shape
    dtype = torch.result_type(weights, memory)
    out = torch.zeros((b, memory.shape[1], h, w), dtype=dtype, device=memory.device)
    for k, (dy, dx) in enumerate(psla_offsets(max_displacement)):
        y0, y1 = _overlap(h, dy)
        x0, x1 = _overlap(w, dx)
        if y0 >= y1 or x0 >= x1:
            continue
        m = memory[:, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        out[:, :, y0:y1, x0:x1].addcmul_(weights[:, k : k + 1, y0:y1, x0:x1], m)
    return out


# --- sparse: the neighbourhood as a CSR matrix [B*H*W, Bm*H*W], K entries a row ---


@functools.lru_cache(maxsize=64)
def _neighbour_table(h: int, w: int, max_displacement: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The neighbourhood of every cell as sorted CSR rows.

    Returns:
        columns (Tensor[H*W, K] int64): row p lists the flat index of cell
            ``p + o_k``, ascending.  A cell outside the map points at the k-th
            of K extra all-zero columns after the ``H*W`` cells instead (its
            weight is forced to 0 by the mask), so every row holds K distinct
            columns: torch's sparse backward merges duplicates and assumes
            sorted rows.
        valid (Tensor[H*W, K] bool): the column is a cell of the map.
        order (Tensor[H*W, K] int64): the offset index of each sorted entry.
        rank (Tensor[H*W, K] int64): the sorted position of each offset index.
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1, 1), xs.reshape(-1, 1)
    offsets = torch.tensor(psla_offsets(max_displacement), device=device)
    ny, nx = ys + offsets[:, 0], xs + offsets[:, 1]
    valid = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    spare = h * w + torch.arange(len(offsets), device=device)
    columns, order = torch.where(valid, ny * w + nx, spare).sort(dim=1)
    return columns, valid.gather(1, order), order, order.argsort(dim=1)


def _csr_pattern(b: int, b_memory: int, h: int, w: int, max_displacement: int, device: torch.device):
    """(crow_indices, col_indices) of the [B*H*W, Bm*(H*W + K)] matrix for a
    query batch b and a memory batch 1 or b, and the neighbour table."""
    table = _neighbour_table(h, w, max_displacement, device)
    columns = table[0]
    k_count = columns.shape[1]
    if b_memory == 1:
        cols = columns.reshape(1, -1).expand(b, -1)
    else:
        cols = columns.reshape(1, -1) + (h * w + k_count) * torch.arange(b, device=device).reshape(-1, 1)
    crow = torch.arange(0, b * h * w * k_count + 1, k_count, device=device)
    return crow, cols.reshape(-1), table


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta", once per process
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _padded_rows(x: Tensor, k_count: int) -> Tensor:
    """x (Tensor[Bm, C, H, W]) -> Tensor[Bm * (H*W + K), C]: cells as rows, K zero rows after each map."""
    bm, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(bm, h * w, c)
    return torch.cat((rows, rows.new_zeros(bm, k_count, c)), dim=1).reshape(-1, c)


def _sparse_weights(query_embed: Tensor, memory_embed: Tensor, max_displacement: int, scale: float, offset_bias: Tensor | None) -> Tensor:
    """Softmaxed weights as Tensor[B * H * W, K]: row = query cell (batch-major,
    row-major), entries in the *sorted column order* of ``_neighbour_table``."""
    b, c, h, w = query_embed.shape
    bm = memory_embed.shape[0]
    crow, cols, (_, valid, order, _) = _csr_pattern(b, bm, h, w, max_displacement, query_embed.device)
    k_count = valid.shape[1]
    pattern = _csr(crow, cols, query_embed.new_zeros(cols.shape[0]), (b * h * w, bm * (h * w + k_count)))
    queries = query_embed.permute(0, 2, 3, 1).reshape(b * h * w, c)  # [B*HW, C]
    keys = _padded_rows(memory_embed, k_count).t()  # [C, Bm*(HW+K)]
    logits = torch.sparse.sampled_addmm(pattern, queries, keys, beta=0.0, alpha=scale).values()
    logits = logits.view(b, h * w, k_count)
    if offset_bias is not None:
        logits = logits + offset_bias[order]  # the bias of each sorted entry's offset, [H*W, K]
    logits = logits.masked_fill(~valid, float("-inf"))
    return logits.softmax(dim=-1).reshape(b * h * w, k_count)


def _sorted_to_offsets(values: Tensor, b: int, h: int, w: int, max_displacement: int) -> Tensor:
    """Tensor[B*H*W, K] in sorted column order -> Tensor[B, K, H, W] in offset order (channels-last strided)."""
    rank = _neighbour_table(h, w, max_displacement, values.device)[3]
    values = values.view(b, h * w, -1).gather(2, rank.expand(b, -1, -1))
    return values.view(b, h, w, -1).permute(0, 3, 1, 2)


def _offsets_to_sorted(weights: Tensor, max_displacement: int) -> Tensor:
    """Tensor[B, K, H, W] in offset order -> Tensor[B*H*W, K] in sorted column order."""
    b, k_count, h, w = weights.shape
    order = _neighbour_table(h, w, max_displacement, weights.device)[2]
    values = weights.permute(0, 2, 3, 1).reshape(b, h * w, k_count).gather(2, order.expand(b, -1, -1))
    return values.reshape(b * h * w, k_count)


def _sparse_aggregate(values: Tensor, memory: Tensor, max_displacement: int, b: int) -> Tensor:
    """values (Tensor[B*H*W, K]) weights in sorted order as from ``_sparse_weights`` -> Tensor[B, C, H, W]."""
    bm, c, h, w = memory.shape
    crow, cols, (_, valid, _, _) = _csr_pattern(b, bm, h, w, max_displacement, memory.device)
    k_count = valid.shape[1]
    dtype = torch.result_type(values, memory)
    matrix = _csr(crow, cols, values.reshape(-1).to(dtype), (b * h * w, bm * (h * w + k_count)))
    dense = _padded_rows(memory.to(dtype), k_count)
    if torch.is_grad_enabled() and (matrix.requires_grad or dense.requires_grad):
        out = matrix @ dense
    else:  # out= skips a zero-fill and a copy of the result inside torch
        out = torch.mm(matrix, dense, out=dense.new_empty((b * h * w, c)))
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def _check_bias(offset_bias: Tensor | None, max_displacement: int) -> Tensor | None:
    """The first K = 1 + 8 d entries of a 1-D per-offset bias (None passes through)."""
    if offset_bias is None:
        return None
    k_count = 1 + 8 * max_displacement
    if offset_bias.ndim != 1 or offset_bias.shape[0] < k_count:
        raise ValueError(f"offset_bias must be 1-D with at least {k_count} entries for d={max_displacement}, got {tuple(offset_bias.shape)}")
    return offset_bias[:k_count]


def _check_pair(query: Tensor, other: Tensor, name: str) -> None:
    if query.ndim != 4 or other.ndim != 4:
        raise ValueError(f"PSLA expects 4-D [B, C, H, W] tensors, got {tuple(query.shape)} and {name} {tuple(other.shape)}")
    if other.shape[-2:] != query.shape[-2:]:
        raise ValueError(f"PSLA: {name} is {tuple(other.shape[-2:])} cells, the query {tuple(query.shape[-2:])}")
    if other.shape[0] not in (1, query.shape[0]):
        raise ValueError(f"PSLA: {name} batch {other.shape[0]} is neither 1 nor the query batch {query.shape[0]}")


class PSLA(nn.Module):
    """PSLA with its two 1x1 embeddings: ``f`` for the memory, ``g`` for the query.

    ``f`` and ``g`` start as the *same* random projection, so that the initial
    affinity ``<g(x), f(y)>`` approximates a scaled inner product ``<x, y>`` of
    the raw features (a random projection roughly preserves inner products)
    instead of an unrelated bilinear form.

    Args:
        channels (int): channels of the query and memory features.
        embed_channels (int): channels of the embeddings (paper: 256).
        max_displacement (int): ``d``.
        impl (str): "auto", "slices" or "sparse", see :func:`psla_weights`.
        offset_prior (float | None): None (the paper): no positional term.  A
            number p: a learnt ``offset_bias`` (Tensor[1 + 8 * MAX_DISPLACEMENT],
            one logit per offset of ``psla_offsets(MAX_DISPLACEMENT)``, the
            first ``1 + 8 d`` used) that starts at p for the centre and 0
            elsewhere, so a fresh module puts a weight of about
            ``e^p / (e^p + 8 d)`` on the same cell: it copies the memory
            rather than averaging its neighbourhood.
    """

    MAX_DISPLACEMENT = 8

    def __init__(
        self, channels: int, embed_channels: int, max_displacement: int = 4, impl: str = "auto", offset_prior: float | None = None
    ):
        super().__init__()
        psla_offsets(max_displacement)  # validate
        _resolve_impl(impl, torch.device("cpu"))
        if max_displacement > self.MAX_DISPLACEMENT:
            raise ValueError(f"max_displacement must be <= {self.MAX_DISPLACEMENT}, got {max_displacement}")
        self.max_displacement = max_displacement
        self.impl = impl
        self.f = nn.Conv2d(channels, embed_channels, 1)
        self.g = nn.Conv2d(channels, embed_channels, 1)
        with torch.no_grad():
            self.g.weight.copy_(self.f.weight)
            self.g.bias.copy_(self.f.bias)
        if offset_prior is None:
            self.offset_bias = None
        else:
            bias = torch.zeros(1 + 8 * self.MAX_DISPLACEMENT)
            bias[0] = offset_prior
            self.offset_bias = nn.Parameter(bias)

    def embed_memory(self, memory: Tensor) -> Tensor:
        """memory (Tensor[B, C, H, W]) -> ``f(memory)`` Tensor[B, E, H, W]; cache it for many queries."""
        return pointwise(memory, self.f)

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        memory_embed: Tensor | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Align ``memory`` to ``query``.

        Args:
            query (Tensor[B, C, H, W]): feature of the new frame.
            memory (Tensor[B or 1, C, H, W]): feature to align.
            memory_embed (Tensor[B or 1, E, H, W] | None): ``embed_memory(memory)``
                if already computed.
            return_weights (bool): also return the Tensor[B, K, H, W] weights.

        Returns:
            Tensor[B, C, H, W]: the aligned memory (and the weights if asked).
        """
        if memory_embed is None:
            memory_embed = self.embed_memory(memory)
        return psla(
            pointwise(query, self.g), memory_embed, memory, self.max_displacement,
            return_weights=return_weights, impl=self.impl, offset_bias=self.offset_bias,
        )

    def extra_repr(self) -> str:
        return f"max_displacement={self.max_displacement}, impl={self.impl!r}, offset_bias={self.offset_bias is not None}"
