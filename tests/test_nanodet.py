import base64
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtag.models import tfjs_graph as tfjs
from vidtag.models.nanodet import (
    COCO_CLASSES,
    NanoDetConfig,
    NanoDetOutput,
    build_nanodet,
    cell_centers,
    distances_to_boxes,
    load_nanodet,
    postprocess,
)
from vidtag.ops.letterbox import plan_letterbox

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model():
    return load_nanodet("nanodet-g-coco")


# --- parity with the TF.js graph (interpreter outputs stored by tools/convert_nanodet.py) ---


def test_parity_with_interpreter(model):
    fixture = np.load(DATA / "nanodet_parity.npz")
    shape = tuple(int(s) for s in fixture["input_shape"])
    x = np.random.default_rng(int(fixture["seed"])).standard_normal(shape, dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    rows = torch.from_numpy(fixture["rows"])
    assert out.cls_scores.shape == (1, 3549, 80) and out.box_dists.shape == (1, 3549, 44)
    assert out.level_shapes == ((52, 52), (26, 26), (13, 13))
    assert rows.max() >= 3549 - 169 and rows.min() == 0  # every level is covered
    cls_diff = (out.cls_scores[0, rows] - torch.from_numpy(fixture["cls_scores"])).abs().max()
    box_diff = (out.box_dists[0, rows] - torch.from_numpy(fixture["box_dists"])).abs().max()
    assert cls_diff < 1e-3 and box_diff < 1e-3, (float(cls_diff), float(box_diff))


def test_parts_compose_and_rectangular_input(model):
    x = torch.randn(2, 3, 192, 416)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [f.shape[1] for f in feats] == list(model.backbone.channels) == [32, 64, 128, 256, 512]
        assert [x.shape[-1] // f.shape[-1] for f in feats] == list(model.backbone.strides) == [4, 4, 8, 16, 32]
        lower = model.backbone.forward_stages(x, 0, 3)
        upper = model.backbone.forward_stages(lower[-1], 3)
        torch.testing.assert_close(lower + upper, feats)
        pyramid = model.neck(feats)
        assert [tuple(p.shape) for p in pyramid] == [(2, 128, 24, 52), (2, 128, 12, 26), (2, 128, 6, 13)]
        out = model.head(pyramid)
        whole = model(x)
    n = 24 * 52 + 12 * 26 + 6 * 13
    assert out.cls_scores.shape == (2, n, 80) and out.box_dists.shape == (2, n, 44)
    torch.testing.assert_close(out.cls_scores, whole.cls_scores)
    assert 0 <= float(out.cls_scores.min()) and float(out.cls_scores.max()) <= 1
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 200, 416))


def test_coco_classes():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[2] == "car" and COCO_CLASSES[7] == "truck"
    assert COCO_CLASSES[-1] == "toothbrush"


# --- the interpreter itself, on a tiny hand-built graph ---


def _tiny_graph(tfjs):
    """Placeholder -> Conv2D (float16 kernel, stride 2, SAME) -> Add bias -> LeakyRelu -> Transpose."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float16)
    bias = rng.standard_normal(4).astype(np.float32)
    perm = np.array([0, 3, 1, 2], np.int32)
    s = lambda text: {"s": base64.b64encode(text.encode()).decode()}  # noqa: E731
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {}},
        {"name": "k", "op": "Const", "attr": {}},
        {"name": "b", "op": "Const", "attr": {}},
        {"name": "perm", "op": "Const", "attr": {}},
        {
            "name": "conv",
            "op": "Conv2D",
            "input": ["x", "k"],
            "attr": {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": s("SAME"), "data_format": s("NHWC")},
        },
        {"name": "add", "op": "AddV2", "input": ["conv", "b"]},
        {"name": "act", "op": "LeakyRelu", "input": ["add"], "attr": {"alpha": {"f": 0.1}}},
        {"name": "out", "op": "Transpose", "input": ["act", "perm"]},
    ]
    manifest = [
        {
            "paths": ["w.bin"],
            "weights": [
                {"name": "k", "shape": list(kernel.shape), "dtype": "float32",
                 "quantization": {"dtype": "float16", "original_dtype": "float32"}},
                {"name": "b", "shape": [4], "dtype": "float32"},
                {"name": "perm", "shape": [4], "dtype": "int32"},
            ],
        }
    ]  # fmt: skip
    model = {"modelTopology": {"node": nodes}, "weightsManifest": manifest}
    data = kernel.tobytes() + bias.tobytes() + perm.tobytes()
    return tfjs.TfjsGraph(model, data), kernel.astype(np.float64), bias.astype(np.float64)


def test_interpreter_tiny_graph_matches_numpy():
    graph, kernel, bias = _tiny_graph(tfjs)
    x = np.random.default_rng(2).standard_normal((1, 5, 6, 2))
    got = graph.run({"x": x}, ["out"])["out"]
    # TF SAME, stride 2, 3x3 kernel: output 3x3; rows padded 1 + 1, columns 0 + 1
    # (TF puts the odd pixel of padding after).
    padded = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    expected = np.zeros((1, 3, 3, 4))
    for i in range(3):
        for j in range(3):
            patch = padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            expected[0, i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    expected = np.where(expected >= 0, expected, 0.1 * expected).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_interpreter_resize_bilinear_half_pixel_matches_torch():
    node = tfjs.Node("r", "ResizeBilinear", ("x", "s"), {"half_pixel_centers": {"b": True}})
    x = np.random.default_rng(3).standard_normal((1, 6, 4, 2))
    for size in ((12, 8), (3, 2), (5, 7)):
        (got,) = tfjs.op_resize_bilinear(node, x, np.array(size))
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-12)


# --- decoding and post-processing ---


def _slow_decode(box_dists, level_shapes, strides):
    """One cell at a time, straight from the definition."""
    boxes = []
    row = 0
    for (h, w), stride in zip(level_shapes, strides):
        for y in range(h):
            for x in range(w):
                cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
                sides = []
                for side in range(4):
                    logits = [float(v) for v in box_dists[row, side * 11 : side * 11 + 11]]
                    top = max(logits)
                    weights = [math.exp(v - top) for v in logits]
                    sides.append(sum(i * wt for i, wt in enumerate(weights)) / sum(weights) * stride)
                left, top_d, right, bottom = sides
                boxes.append([cx - left, cy - top_d, cx + right, cy + bottom])
                row += 1
    return torch.tensor(boxes)


def test_distances_to_boxes_matches_slow_loop():
    shapes, strides = ((4, 6), (2, 3), (1, 2)), (8, 16, 32)
    n = sum(h * w for h, w in shapes)
    box_dists = torch.randn(2, n, 44) * 3
    centers, cell_strides = cell_centers(shapes, strides)
    fast = distances_to_boxes(box_dists, centers, cell_strides)
    assert fast.shape == (2, n, 4)
    for b in range(2):
        torch.testing.assert_close(fast[b], _slow_decode(box_dists[b], shapes, strides), atol=1e-4, rtol=1e-5)


def _synthetic_output(input_wh, cells):
    """An output whose listed cells {row: (class, score, (l, t, r, b) bins)} fire; bins are exact."""
    w, h = input_wh
    shapes = tuple((h // s, w // s) for s in (8, 16, 32))
    n = sum(a * b for a, b in shapes)
    cls = torch.zeros(1, n, 80)
    dists = torch.full((1, n, 44), -30.0)
    dists.view(1, n, 4, 11)[..., 0] = 30.0  # zero distance everywhere else
    for row, (label, score, bins) in cells.items():
        cls[0, row, label] = score
        dists[0, row] = -30.0
        for side, k in enumerate(bins):
            dists[0, row, side * 11 + k] = 30.0
    return NanoDetOutput(cls, dists, shapes, (8, 16, 32))


def test_postprocess_synthetic():
    box, _ = plan_letterbox((640, 272), 416)  # input 416x192, scale 0.65, pad_y 8
    assert box.input == (416, 192)
    row = 2 * 52 + 3  # stride 8, cell (x=3, y=2): centre (28, 20)
    row_dup = row + 1  # neighbour: centre (36, 20), overlaps strongly -> suppressed
    out = _synthetic_output(
        box.input,
        {
            row: (0, 0.9, (2, 1, 2, 1)),
            row_dup: (0, 0.8, (3, 1, 1, 1)),
            row + 10: (2, 0.3, (1, 1, 1, 1)),
            row + 20: (5, 0.2, (1, 1, 1, 1)),  # below the threshold
        },
    )
    (dets,) = postprocess(out, box, conf_threshold=0.25, iou_threshold=0.6)
    assert dets.labels.tolist() == [0, 2]
    np.testing.assert_allclose(dets.scores, [0.9, 0.3], rtol=1e-6)
    expected_input = torch.tensor([28.0 - 16, 20.0 - 8, 28.0 + 16, 20.0 + 8])
    np.testing.assert_allclose(dets.boxes[0], box.to_source(expected_input).numpy(), atol=1e-3)

    (only_cars,) = postprocess(out, box, classes={2})
    assert only_cars.labels.tolist() == [2]
    (capped,) = postprocess(out, box, max_det=1)
    assert len(capped) == 1
    (none,) = postprocess(out, box, conf_threshold=0.95)  # no candidate at all
    assert len(none) == 0 and none.boxes.shape == (0, 4)


def test_postprocess_clips_to_source_frame():
    box, _ = plan_letterbox((640, 272), 416)
    out = _synthetic_output(box.input, {0: (0, 0.9, (10, 10, 10, 10))})  # reaches past the top-left
    (dets,) = postprocess(out, box)
    x1, y1, x2, y2 = dets.boxes[0]
    assert x1 == 0 and y1 == 0 and 0 < x2 <= 640 and 0 < y2 <= 272


def test_postprocess_rejects_mismatched_letterbox():
    box, _ = plan_letterbox((640, 272), 416)
    out = _synthetic_output((416, 416), {})
    with pytest.raises(ValueError, match="does not match"):
        postprocess(out, box)


def test_build_nanodet_random_init_shapes():
    model = build_nanodet(NanoDetConfig(num_classes=3))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.cls_scores.shape == (1, 8 * 12 + 4 * 6 + 2 * 3, 3) and out.box_dists.shape[-1] == 44


def test_stem_pools_before_its_activation_with_the_same_values():
    from vidtag.models.nanodet import Stem

    torch.manual_seed(0)
    stem = Stem(8, slope=0.1)
    x = torch.randn(2, 3, 33, 46).contiguous(memory_format=torch.channels_last)  # odd sizes: the pool's padding
    with torch.no_grad():
        reference = F.max_pool2d(F.leaky_relu(stem.conv.conv(x), 0.1), 3, 2, 1)  # the graph's order
        assert torch.equal(stem(x), reference)
