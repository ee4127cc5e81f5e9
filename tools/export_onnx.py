"""Export a vidtag detector to ONNX for ``--runtime onnxruntime``.

    python tools/export_onnx.py [--weights nanodet-g-coco] [--out weights/]
                                [--psla psla-nanodet-g] [--only network|psla]

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

and, for ``--method psla`` (whose network is split elsewhere: at backbone stage
``split_stage`` of the PSLA modules' config, ``--psla``; the shipped one splits
at the stem and works on the head's 3x3-conv features), up to three more:

* ``<out>/<name>.psla-low-s<split_stage>.onnx``: ``N_l``, backbone stages
  ``0..split_stage``. Input ``images``; output ``low`` float32 [B, Cl, H/sl,
  W/sl] (:meth:`vidtag.models.psla.PSLADetector.low_features`).
* ``<out>/<name>.psla-high-s<split_stage>-<feature>.onnx``: ``N_f`` from
  ``low``: the rest of the backbone, the neck and, for ``feature="head"``,
  each head level's 3x3 conv. Input ``low``; outputs ``f8``, ``f16``, ``f32``
  (``PSLADetector.high_features``).
* ``<out>/<name>.psla-predict.onnx`` (``feature="head"`` only; for ``"neck"``
  the head graph is ``N_t``): the head's 1x1 predictors. Inputs ``f8``,
  ``f16``, ``f32``; outputs as the head graph's (``PSLADetector.predict``).

and records them in the weights' manifest as ``exports.onnxruntime`` (the psla
graphs under ``exports.onnxruntime.psla``, with the split they were made for):
files, sha256s, the sha256 of the torch weights they were exported from, the
command, and their parity with the torch model (largest absolute difference of
the class scores and box logits of the graphs in sequence, and for psla of
``low`` and ``Fh`` too, on seeded random inputs of three sizes, run by ONNX
Runtime).  ``--only network`` or ``--only psla`` exports one group and keeps
the manifest's record (and files) of the other: the shipped psla graphs were
added with ``--only psla``.  The export is shipped, not built at first use:
building needs ``onnx`` and ``onnxscript`` (the exporter) on every user's
machine, running needs only ``onnxruntime``.
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
from vidtag.models.psla import PSLAConfig, PSLADetector, build_psla  # noqa: E402
from vidtag.weights import file_sha256, resolve_weights  # noqa: E402

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


class _Low(nn.Module):
    """PSLA's N_l: backbone stages 0..split_stage."""

    def __init__(self, model: PSLADetector):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.low_features(images)


class _High(nn.Module):
    """PSLA's N_f from the low feature, one output per level."""

    def __init__(self, model: PSLADetector):
        super().__init__()
        self.model = model

    def forward(self, low: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.high_features(None, low))


class _Predict(nn.Module):
    """PSLA's N_t for ``feature="head"``: the head's 1x1 predictors."""

    def __init__(self, model: PSLADetector):
        super().__init__()
        self.model = model

    def forward(self, f8: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.predict([f8, f16, f32])
        return out.cls_scores, out.box_dists


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _level_dims(names: tuple[str, ...]) -> dict:
    batch = torch.export.Dim("batch", max=256)
    return {n: {0: batch, 2: torch.export.Dim(f"h{s}", max=1024), 3: torch.export.Dim(f"w{s}", max=1024)}
            for n, s in zip(names, (8, 16, 32))}


def psla_split(psla_manifest_path: Path, manifest) -> PSLAConfig:
    """The PSLA modules' config from their manifest, checked to be trained on ``manifest``'s weights."""
    data = json.loads(psla_manifest_path.read_text())
    if "psla_config" not in data:
        raise SystemExit(f"{psla_manifest_path}: not a PSLA modules' manifest (no psla_config)")
    if data.get("base_weights", {}).get("sha256") != manifest.sha256:
        raise SystemExit(f"{psla_manifest_path}: its modules were trained on {data.get('base_weights', {}).get('name')}, "
                         f"not on {manifest.name}")
    return PSLAConfig.from_saved(data["psla_config"])


def export_network(model: NanoDet, manifest, folder: Path) -> dict:
    """Backbone + neck and head: the ``exports.onnxruntime`` record without the psla graphs."""
    import onnxruntime as ort

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
    size = (features_path.stat().st_size + head_path.stat().st_size) / 1e6
    print(f"wrote {features_path} and {head_path} ({size:.1f} MB), largest difference to torch {worst:.2e}")
    return {
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


def export_psla(model: NanoDet, manifest, folder: Path, config: PSLAConfig, made_by: str) -> dict:
    """PSLA's N_l, N_f (from N_l's output) and, for ``feature="head"``, N_t: the ``exports.onnxruntime.psla`` record."""
    import onnxruntime as ort

    split, feature = config.split_stage, config.feature
    psla = build_psla(model, PSLAConfig(split_stage=split, feature=feature)).eval()  # the new modules are not exported
    low_stride = model.backbone.strides[split]
    paths = {"low": folder / f"{manifest.name}.psla-low-s{split}.onnx",
             "high": folder / f"{manifest.name}.psla-high-s{split}-{feature}.onnx"}
    if feature == "head":
        paths["predict"] = folder / f"{manifest.name}.psla-predict.onnx"
    batch, rows, cols = torch.export.Dim("batch", max=256), torch.export.Dim("rows", max=128), torch.export.Dim("cols", max=128)
    example = torch.zeros(2, 3, 320, 416)
    torch.onnx.export(_Low(psla).eval(), (example,), str(paths["low"]), dynamo=True, opset_version=OPSET,
                      input_names=["images"], output_names=["low"],
                      dynamic_shapes={"images": {0: batch, 2: 32 * rows, 3: 32 * cols}}, external_data=False)
    with torch.inference_mode():
        low = psla.low_features(example).clone()
        high = tuple(t.clone() for t in psla.high_features(None, low))
    cells = 32 // low_stride  # low cells per 32 input pixels
    torch.onnx.export(_High(psla).eval(), (low,), str(paths["high"]), dynamo=True, opset_version=OPSET,
                      input_names=["low"], output_names=["f8", "f16", "f32"],
                      dynamic_shapes={"low": {0: batch, 2: cells * rows, 3: cells * cols}}, external_data=False)
    if "predict" in paths:
        torch.onnx.export(_Predict(psla).eval(), high, str(paths["predict"]), dynamo=True, opset_version=OPSET,
                          input_names=["f8", "f16", "f32"], output_names=["cls_scores", "box_dists"],
                          dynamic_shapes=_level_dims(("f8", "f16", "f32")), external_data=False)
    predict_path = paths.get("predict", folder / f"{manifest.name}.head.onnx")
    sessions = {part: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for part, path in {**paths, "predict": predict_path}.items()}
    predict_inputs = [i.name for i in sessions["predict"].get_inputs()]
    generator = torch.Generator().manual_seed(0)
    parity = {}
    for b, h, w in PARITY_SIZES:
        x = torch.randn(b, 3, h, w, generator=generator)
        with torch.inference_mode():
            want_low = psla.low_features(x)
            want_high = psla.high_features(None, want_low)
            want = psla.predict(want_high)
        (got_low,) = sessions["low"].run(None, {"images": x.numpy()})
        got_high = sessions["high"].run(None, {"low": got_low})
        cls_scores, box_dists = sessions["predict"].run(None, dict(zip(predict_inputs, got_high)))
        parity[f"{b}x3x{h}x{w}"] = {
            "low_max_abs": float(np.abs(got_low - want_low.numpy()).max()),
            "high_max_abs": max(float(np.abs(g - t.numpy()).max()) for g, t in zip(got_high, want_high)),
            "cls_scores_max_abs": float(np.abs(cls_scores - want.cls_scores.numpy()).max()),
            "box_dists_max_abs": float(np.abs(box_dists - want.box_dists.numpy()).max()),
        }
    worst = max(v for p in parity.values() for v in p.values())
    names = ", ".join(str(path) for path in paths.values())
    if worst > 1e-3:
        raise SystemExit(f"{names}: ONNX Runtime differs from torch by {worst:.2e}; not recorded")
    size = sum(path.stat().st_size for path in paths.values()) / 1e6
    print(f"wrote {names} ({size:.1f} MB), largest difference to torch {worst:.2e}")
    high_format = "the head levels' 3x3-conv outputs" if feature == "head" else "the neck output"
    predict_format = ("predict: f8, f16, f32 -> cls_scores, box_dists (the head's 1x1 predictors)" if feature == "head"
                      else "predict: the head graph")
    return {
        "split_stage": split,
        "feature": feature,
        **{part: {"file": path.name, "sha256": sha256_of(path)} for part, path in paths.items()},
        "from_sha256": manifest.sha256,
        "format": f"ONNX opset {OPSET}, float32; low: images [B, 3, H, W] (H, W multiples of 32) -> low "
                  f"[B, {model.backbone.channels[split]}, H/{low_stride}, W/{low_stride}] (backbone stages 0..{split}); "
                  f"high: low -> f8, f16, f32 ({high_format}); {predict_format}",
        "made_by": made_by,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "parity": {"inputs": "seeded standard normal; low, high and predict in sequence against PSLADetector's "
                             "low_features, high_features and predict", "max_abs_difference": parity},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="nanodet-g-coco", help="manifest name or path (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO_DIR / "weights"), help="folder of the manifest (default: %(default)s)")
    parser.add_argument("--psla", default="psla-nanodet-g",
                        help="the PSLA modules' manifest (name in --out, or a .json path) whose split the psla graphs "
                             "are made for; 'none': no psla graphs (default: %(default)s)")
    parser.add_argument("--only", choices=("network", "psla"),
                        help="export only these graphs and keep the manifest's record (and files) of the others")
    args = parser.parse_args()

    manifest = resolve_weights(args.weights, args.out)
    model = load_nanodet(manifest, channels_last=False)
    folder = Path(args.out)
    data = json.loads(manifest.manifest_path.read_text())
    previous = data.get("exports", {}).get("onnxruntime")
    if args.only == "psla":
        if args.psla == "none":
            raise SystemExit("--only psla needs --psla")
        if previous is None or previous.get("from_sha256") != manifest.sha256:
            raise SystemExit(f"{manifest.manifest_path}: no ONNX export of these weights to add the psla graphs to; "
                             "run without --only")
        for part in ("features", "head"):
            if file_sha256(folder / previous[part]["file"]) != previous[part]["sha256"]:
                raise SystemExit(f"{folder / previous[part]['file']}: does not match its manifest; run without --only")
        record = dict(previous)
    else:
        record = export_network(model, manifest, folder)
        if args.only == "network" and previous is not None and "psla" in previous:
            record["psla"] = previous["psla"]
    if args.only != "network" and args.psla != "none":
        psla_path = Path(args.psla) if args.psla.endswith(".json") else folder / f"{args.psla}.json"
        config = psla_split(psla_path, manifest)
        made_by = f"python tools/export_onnx.py --weights {manifest.name} --psla {args.psla}" + (" --only psla" if args.only else "")
        record["psla"] = export_psla(model, manifest, folder, config, made_by)
    data.setdefault("exports", {})["onnxruntime"] = record
    manifest.manifest_path.write_text(json.dumps(data, indent=2) + "\n")

if __name__ == "__main__":
    main()
