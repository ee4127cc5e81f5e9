"""Export a vidtag detector to ONNX for ``--runtime onnxruntime``.

    python tools/export_onnx.py [--weights nanodet-g-coco] [--out weights/]

Writes two graphs (float32, opset 18; batch, height and width dynamic), the
network in the two parts the methods share: the temporal methods work
between them.

* ``<out>/<name>.features.onnx``: backbone and neck. Input ``images`` float32
  [B, 3, H, W], normalised BGR, H and W multiples of 32; outputs ``p8``,
  ``p16``, ``p32`` float32 [B, C, H/s, W/s].
* ``<out>/<name>.head.onnx``: the GFL head. Inputs ``p8``, ``p16``, ``p32``;
  outputs ``cls_scores`` float32 [B, N, num_classes] (sigmoid) and
  ``box_dists`` float32 [B, N, 4 * (reg_max + 1)] (GFL logits), N the cells
  of strides 8, 16, 32 (:class:`vidtag.models.nanodet.NanoDetOutput`).

and records them in the weights' manifest as ``exports.onnxruntime``: files,
sha256s, the sha256 of the torch weights they were exported from, the
command, and their parity with the torch model (largest absolute difference
of the class scores and box logits of the two graphs in sequence, on seeded
random inputs of three sizes, run by ONNX Runtime).  The export is shipped,
not built at first use: building needs ``onnx`` and ``onnxscript`` (the
exporter) on every user's machine, running needs only ``onnxruntime``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from vidtag.models.nanodet import NanoDet, load_nanodet  # noqa: E402
from vidtag.weights import resolve_weights  # noqa: E402

OPSET = 18
PARITY_SIZES = ((1, 320, 416), (3, 416, 416), (2, 256, 192))


class _Features(nn.Module):
    """Backbone and neck with a tuple output (what an ONNX graph returns)."""

    def __init__(self, model: NanoDet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.neck(self.model.backbone(images)))


class _Head(nn.Module):
    """The head with plain tensor outputs."""

    def __init__(self, model: NanoDet):
        super().__init__()
        self.model = model

    def forward(self, p8: torch.Tensor, p16: torch.Tensor, p32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.head([p8, p16, p32])
        return out.cls_scores, out.box_dists


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="nanodet-g-coco", help="manifest name or path (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO_DIR / "weights"), help="folder of the manifest (default: %(default)s)")
    args = parser.parse_args()

    import onnxruntime as ort

    manifest = resolve_weights(args.weights, args.out)
    model = load_nanodet(manifest, channels_last=False)
    folder = Path(args.out)
    features_path, head_path = folder / f"{manifest.name}.features.onnx", folder / f"{manifest.name}.head.onnx"
    batch, rows, cols = torch.export.Dim("batch", max=256), torch.export.Dim("rows", max=128), torch.export.Dim("cols", max=128)
    example = torch.zeros(2, 3, 320, 416)
    torch.onnx.export(_Features(model).eval(), (example,), str(features_path), dynamo=True, opset_version=OPSET,
                      input_names=["images"], output_names=["p8", "p16", "p32"],
                      dynamic_shapes={"images": {0: batch, 2: 32 * rows, 3: 32 * cols}}, external_data=False)
    with torch.inference_mode():
        pyramid = tuple(t.clone() for t in _Features(model)(example))
    level_dims = [{0: batch, 2: torch.export.Dim(f"h{s}", max=1024), 3: torch.export.Dim(f"w{s}", max=1024)} for s in (8, 16, 32)]
    torch.onnx.export(_Head(model).eval(), pyramid, str(head_path), dynamo=True, opset_version=OPSET,
                      input_names=["p8", "p16", "p32"], output_names=["cls_scores", "box_dists"],
                      dynamic_shapes={"p8": level_dims[0], "p16": level_dims[1], "p32": level_dims[2]}, external_data=False)

    features = ort.InferenceSession(str(features_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    parity = {}
    for b, h, w in PARITY_SIZES:
        x = torch.randn(b, 3, h, w, generator=generator)
        with torch.inference_mode():
            want = model(x)
        p8, p16, p32 = features.run(None, {"images": x.numpy()})
        cls_scores, box_dists = head.run(None, {"p8": p8, "p16": p16, "p32": p32})
        parity[f"{b}x3x{h}x{w}"] = {
            "cls_scores_max_abs": float(np.abs(cls_scores - want.cls_scores.numpy()).max()),
            "box_dists_max_abs": float(np.abs(box_dists - want.box_dists.numpy()).max()),
        }
    worst = max(v for p in parity.values() for v in p.values())
    if worst > 1e-3:
        raise SystemExit(f"{features_path}, {head_path}: ONNX Runtime differs from torch by {worst:.2e}; not recorded")

    data = json.loads(manifest.manifest_path.read_text())
    data.setdefault("exports", {})["onnxruntime"] = {
        "features": {"file": features_path.name, "sha256": sha256_of(features_path)},
        "head": {"file": head_path.name, "sha256": sha256_of(head_path)},
        "from_sha256": manifest.sha256,
        "format": f"ONNX opset {OPSET}, float32; features: images [B, 3, H, W] (H, W multiples of 32) -> p8, p16, p32; "
                  "head: p8, p16, p32 -> cls_scores [B, N, classes], box_dists [B, N, 4 * (reg_max + 1)]",
        "made_by": f"python tools/export_onnx.py --weights {manifest.name}",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "parity": {"inputs": "seeded standard normal", "max_abs_difference": parity},
    }
    manifest.manifest_path.write_text(json.dumps(data, indent=2) + "\n")
    size = (features_path.stat().st_size + head_path.stat().st_size) / 1e6
    print(f"wrote {features_path} and {head_path} ({size:.1f} MB), largest difference to torch {worst:.2e}")


if __name__ == "__main__":
    main()
