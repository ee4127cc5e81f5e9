"""A small numpy interpreter for TF.js graph models (model.json + weight shards).

It is the slow, obviously correct reference that the PyTorch port of a model
is checked against: every op is written out in plain numpy, in float64, with
TensorFlow's semantics (NHWC convolutions, VALID/SAME padding, ResizeBilinear
with its ``half_pixel_centers``/``align_corners`` variants).  Speed is not a
goal.

Usage::

    graph = TfjsGraph.from_files("nanodet.json")      # shards found beside it
    out = graph.run({"input_1": x}, ["Identity", "Identity_3"])

Only the ops that graph models of small CNNs use are implemented; an unknown
op raises ``NotImplementedError`` naming it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Byte widths and numpy types of the dtypes a weights manifest may name.
_MANIFEST_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
}


def decode_weights(manifest: list[dict], data: bytes) -> dict[str, np.ndarray]:
    """Split the concatenated weight shards into named arrays.

    Args:
        manifest: the model.json ``weightsManifest`` list (groups of
            ``{"paths": [...], "weights": [{"name", "shape", "dtype",
            "quantization"?}]}``).
        data: the bytes of all groups' shards, concatenated in manifest order.

    Returns:
        name -> array.  Quantised weights are dequantised to their
        ``original_dtype`` (float16 is widened; uint8/uint16 use
        ``value * scale + min``).
    """
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape, dtype=np.int64))
            quant = spec.get("quantization")
            stored = np.dtype(_MANIFEST_DTYPES[quant["dtype"] if quant else spec["dtype"]])
            nbytes = count * stored.itemsize
            if offset + nbytes > len(data):
                raise ValueError(f"weight {spec['name']!r} runs past the end of the weight data")
            raw = np.frombuffer(data, dtype=stored.newbyteorder("<"), count=count, offset=offset)
            offset += nbytes
            if quant is None:
                value = raw.copy()
            elif quant["dtype"] == "float16":
                value = raw.astype(_MANIFEST_DTYPES[quant.get("original_dtype", "float32")])
            else:
                value = (raw.astype(np.float64) * quant["scale"] + quant["min"]).astype(np.float32)
            weights[spec["name"]] = value.reshape(shape)
    if offset != len(data):
        raise ValueError(f"weight data has {len(data) - offset} bytes that no weight uses")
    return weights


@dataclass(frozen=True)
class Node:
    """One graph node: ``inputs`` are ``"name"`` or ``"name:k"`` (k-th output)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict = field(default_factory=dict)


def _attr_ints(node: Node, key: str, default=None) -> list[int] | None:
    if key not in node.attr:
        return default
    return [int(i) for i in node.attr[key]["list"].get("i", [])]


def _attr_str(node: Node, key: str, default: str) -> str:
    if key not in node.attr:
        return default
    return base64.b64decode(node.attr[key]["s"]).decode()


def _attr_bool(node: Node, key: str, default: bool) -> bool:
    return bool(node.attr[key].get("b", False)) if key in node.attr else default


def _attr_float(node: Node, key: str, default: float) -> float:
    return float(node.attr[key].get("f", default)) if key in node.attr else default


# --------------------------------------------------------------------------
# Ops.  Each takes (node, list of input arrays) and returns a list of outputs.
# Tensors are NHWC where TensorFlow says so (Conv2D, MaxPool, ResizeBilinear).
# --------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> np.ndarray:
    """x [N, H, W, C] -> [N, OH, OW, kh, kw, C] views of the sliding windows (VALID)."""
    n, h, w, c = x.shape
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (w - (kw - 1) * dw - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x,
        shape=(n, oh, ow, kh, kw, c),
        strides=(s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
        writeable=False,
    )


def _pad_for(node: Node, x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, value: float):
    padding = _attr_str(node, "padding", "VALID")
    if padding == "VALID":
        return x
    if padding == "SAME":
        pt, pb = _same_padding(x.shape[1], kh, sh, dh)
        pl, pr = _same_padding(x.shape[2], kw, sw, dw)
    elif padding == "EXPLICIT":
        p = _attr_ints(node, "explicit_paddings")
        pt, pb, pl, pr = p[2], p[3], p[4], p[5]
    else:
        raise NotImplementedError(f"{node.name}: padding {padding}")
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _check_nhwc(node: Node) -> None:
    fmt = _attr_str(node, "data_format", "NHWC")
    if fmt != "NHWC":
        raise NotImplementedError(f"{node.name}: data_format {fmt}")


def op_conv2d(node: Node, x: np.ndarray, kernel: np.ndarray) -> list[np.ndarray]:
    """x [N, H, W, Cin], kernel [kh, kw, Cin, Cout] (HWIO) -> [N, OH, OW, Cout]."""
    _check_nhwc(node)
    _, sh, sw, _ = _attr_ints(node, "strides", [1, 1, 1, 1])
    _, dh, dw, _ = _attr_ints(node, "dilations", [1, 1, 1, 1])
    kh, kw, cin, _ = kernel.shape
    if x.shape[3] != cin:
        raise NotImplementedError(f"{node.name}: grouped convolution ({x.shape[3]} vs {cin} channels)")
    x = _pad_for(node, x, kh, kw, sh, sw, dh, dw, 0.0)
    win = _windows(np.ascontiguousarray(x), kh, kw, sh, sw, dh, dw)
    return [np.einsum("nhwijc,ijco->nhwo", win, kernel, optimize=True)]


def op_maxpool(node: Node, x: np.ndarray) -> list[np.ndarray]:
    """x [N, H, W, C] -> [N, OH, OW, C]; SAME padding pads with -inf."""
    _check_nhwc(node)
    _, kh, kw, _ = _attr_ints(node, "ksize")
    _, sh, sw, _ = _attr_ints(node, "strides")
    x = _pad_for(node, x, kh, kw, sh, sw, 1, 1, -np.inf)
    return [_windows(np.ascontiguousarray(x), kh, kw, sh, sw, 1, 1).max(axis=(3, 4))]


def op_pad(node: Node, x: np.ndarray, paddings: np.ndarray, value=0.0) -> list[np.ndarray]:
    """Constant padding; ``paddings`` [rank, 2] (before, after) per axis."""
    mode = _attr_str(node, "mode", "CONSTANT")
    if mode != "CONSTANT":
        raise NotImplementedError(f"{node.name}: pad mode {mode}")
    return [np.pad(x, [(int(a), int(b)) for a, b in paddings], constant_values=np.asarray(value).item())]


def _resize_axis_weights(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """Per output index: lower index, upper index, weight of upper (TF's scheme)."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    out = np.arange(out_size, dtype=np.float64)
    src = (out + 0.5) * scale - 0.5 if half_pixel else out * scale
    floor = np.floor(src)
    lower = np.clip(floor.astype(np.int64), 0, in_size - 1)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    return lower, upper, src - floor


def op_resize_bilinear(node: Node, x: np.ndarray, size: np.ndarray) -> list[np.ndarray]:
    """x [N, H, W, C] -> [N, size[0], size[1], C], TF ResizeBilinear semantics."""
    align = _attr_bool(node, "align_corners", False)
    half = _attr_bool(node, "half_pixel_centers", False)
    if align and half:
        raise ValueError(f"{node.name}: align_corners and half_pixel_centers are exclusive")
    oh, ow = int(size[0]), int(size[1])
    y0, y1, fy = _resize_axis_weights(x.shape[1], oh, align, half)
    x0, x1, fx = _resize_axis_weights(x.shape[2], ow, align, half)
    fy = fy[None, :, None, None]
    fx = fx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return [top * (1 - fy) + bottom * fy]


def op_split_v(node: Node, x: np.ndarray, sizes: np.ndarray, axis: np.ndarray) -> list[np.ndarray]:
    axis = int(axis)
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


def op_sparse_to_dense(node: Node, indices, shape, values, default) -> list[np.ndarray]:
    """Dense array of ``shape`` filled with ``default``, ``values`` at ``indices``."""
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    dense = np.full(shape, np.asarray(default).item(), dtype=np.asarray(values).dtype)
    indices = np.asarray(indices).reshape(-1, len(shape)) if len(shape) else np.zeros((0, 0), np.int64)
    values = np.broadcast_to(np.asarray(values), (len(indices),))
    for index, value in zip(indices, values):
        dense[tuple(int(i) for i in index)] = value
    return [dense]


def op_concat(node: Node, *args) -> list[np.ndarray]:
    *tensors, axis = args
    return [np.concatenate(tensors, axis=int(axis))]


def op_leaky_relu(node: Node, x: np.ndarray) -> list[np.ndarray]:
    alpha = _attr_float(node, "alpha", 0.2)
    return [np.where(x >= 0, x, alpha * x)]


_OPS = {
    "Identity": lambda node, x: [x],
    "Add": lambda node, a, b: [a + b],
    "AddV2": lambda node, a, b: [a + b],
    "BiasAdd": lambda node, a, b: [a + b],
    "Mul": lambda node, a, b: [a * b],
    "Sub": lambda node, a, b: [a - b],
    "Relu": lambda node, x: [np.maximum(x, 0)],
    "Sigmoid": lambda node, x: [1.0 / (1.0 + np.exp(-x))],
    "Transpose": lambda node, x, perm: [np.transpose(x, [int(p) for p in perm])],
    "Reshape": lambda node, x, shape: [x.reshape([int(s) for s in shape])],
    "LeakyRelu": op_leaky_relu,
    "Conv2D": op_conv2d,
    "MaxPool": op_maxpool,
    "Pad": op_pad,
    "PadV2": op_pad,
    "ResizeBilinear": op_resize_bilinear,
    "SplitV": op_split_v,
    "SparseToDense": op_sparse_to_dense,
    "ConcatV2": op_concat,
}


class TfjsGraph:
    """A TF.js graph model held in memory and run op by op in float64.

    Attributes:
        nodes (dict[str, Node]): by name.
        weights (dict[str, np.ndarray]): the dequantised constants by node name.
    """

    def __init__(self, model: dict, weight_data: bytes):
        """model: the parsed model.json; weight_data: its shards concatenated."""
        self.model = model
        self.nodes = {
            n["name"]: Node(n["name"], n["op"], tuple(n.get("input", ())), n.get("attr", {}))
            for n in model["modelTopology"]["node"]
        }
        self.weights = decode_weights(model["weightsManifest"], weight_data)
        missing = [n.name for n in self.nodes.values() if n.op == "Const" and n.name not in self.weights]
        if missing:
            raise ValueError(f"Const nodes without weights: {missing[:5]}")

    @classmethod
    def from_files(cls, json_path: str | Path) -> "TfjsGraph":
        """Read model.json and the shards its manifest names (same folder)."""
        json_path = Path(json_path)
        model = json.loads(json_path.read_text())
        data = b"".join(
            (json_path.parent / p).read_bytes() for group in model["weightsManifest"] for p in group["paths"]
        )
        return cls(model, data)

    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.op == "Placeholder"]

    def ops_used(self) -> dict[str, int]:
        """op name -> count of nodes."""
        counts: dict[str, int] = {}
        for n in self.nodes.values():
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Evaluate ``outputs`` (``"name"`` or ``"name:k"``) given Placeholder values.

        Float feeds and weights are computed in float64; the results are
        returned in float64 too.
        """
        values: dict[str, list[np.ndarray]] = {}
        for name, value in feeds.items():
            value = np.asarray(value)
            values[name] = [value.astype(np.float64) if value.dtype.kind == "f" else value]

        def tensor(ref: str) -> np.ndarray:
            name, _, index = ref.partition(":")
            evaluate(name)
            return values[name][int(index) if index else 0]

        def evaluate(name: str) -> None:
            # Iterative post-order walk: graphs are deep enough to trouble recursion.
            stack = [name]
            while stack:
                current = stack[-1]
                if current in values:
                    stack.pop()
                    continue
                node = self.nodes[current]
                deps = [i.partition(":")[0] for i in node.inputs if not i.startswith("^")]
                pending = [d for d in deps if d not in values]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                values[current] = self._execute(node, [values[d][_output_index(i)] for d, i in _data_inputs(node)])

        return {ref: tensor(ref) for ref in outputs}

    def _execute(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if node.op == "Const":
            value = self.weights[node.name]
            return [value.astype(np.float64) if value.dtype.kind == "f" else value]
        if node.op == "Placeholder":
            raise KeyError(f"no value fed for Placeholder {node.name!r}")
        try:
            op = _OPS[node.op]
        except KeyError:
            raise NotImplementedError(f"op {node.op} (node {node.name})") from None
        return op(node, *inputs)


def _data_inputs(node: Node) -> list[tuple[str, str]]:
    return [(i.partition(":")[0], i) for i in node.inputs if not i.startswith("^")]


def _output_index(ref: str) -> int:
    _, _, index = ref.partition(":")
    return int(index) if index else 0
