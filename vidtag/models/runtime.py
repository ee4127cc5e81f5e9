"""Which engine runs the detector network: torch, or ONNX Runtime on CPU.

``--runtime auto`` (the default) runs NanoDet-g with ONNX Runtime when the
network runs on the CPU, the method is ``frame`` or ``iff`` and the weights'
manifest ships an ONNX export (``exports.onnxruntime``, made by
``tools/export_onnx.py``: backbone + neck, and head, as two graphs).  iff's
own modules (embedding, flow, aggregation) stay in torch between the two.
Everything else runs in torch: CUDA, training, and psla, whose network is
split at the stem, where the export does not split it.  ``torch`` and
``onnxruntime`` force one; asking for ONNX Runtime where it cannot run is an
error that says why.

:class:`OnnxNanoDet` is called like :class:`vidtag.models.nanodet.NanoDet`:
normalised frames (Tensor[B, 3, H, W], H and W multiples of 32) in,
:class:`vidtag.models.nanodet.NanoDetOutput` out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidtag.errors import WeightsError
from vidtag.models.nanodet import NanoDetConfig, NanoDetOutput
from vidtag.weights import WeightsManifest, file_sha256

RUNTIMES = ("auto", "torch", "onnxruntime")


def resolve_runtime(requested: str, method: str, device: torch.device, manifest: WeightsManifest) -> str:
    """``requested`` (one of :data:`RUNTIMES`) -> ``"torch"`` or ``"onnxruntime"``.

    Raises:
        ValueError: an unknown runtime, or ONNX Runtime asked for where it cannot run.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}: choose from {', '.join(RUNTIMES)}")
    reason = None
    if device.type != "cpu":
        reason = f"the network runs on {device.type} (ONNX Runtime is used on the CPU only)"
    elif method not in ("frame", "iff"):
        reason = f"--method {method} splits the network where the export does not"
    elif "onnxruntime" not in manifest.exports:
        reason = f"{manifest.name} ships no ONNX export (make one with tools/export_onnx.py)"
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            reason = "the onnxruntime package is not installed"
    if requested == "onnxruntime" and reason:
        raise ValueError(f"--runtime onnxruntime: {reason}")
    if requested == "torch" or reason:
        return "torch"
    return "onnxruntime"


class OnnxNanoDet:
    """NanoDet-g's ONNX export (two graphs: backbone + neck, head) run by ONNX Runtime
    on the CPU; :meth:`neck` and :meth:`head` are the parts, calling it runs both.

    Args:
        manifest: the weights' manifest; its ``exports.onnxruntime`` names the
            graphs (beside the manifest) and their sha256.
        threads: intra-op threads (default: torch's).

    Raises:
        WeightsError: a graph is missing, does not match its sha256, or was
            exported from other weights than the manifest's.
    """

    channels_last = False

    def __init__(self, manifest: WeightsManifest, threads: int | None = None):
        import onnxruntime as ort

        export = manifest.exports["onnxruntime"]
        if export.get("from_sha256") != manifest.sha256:
            raise WeightsError(f"{manifest.manifest_path}: its ONNX export was made from other weights than "
                               f"{manifest.file}; run tools/export_onnx.py again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        sessions = []
        for part in ("features", "head"):
            path = manifest.weights_path.parent / export[part]["file"]
            if not path.is_file():
                raise WeightsError(f"{path}: ONNX export not found")
            if file_sha256(path) != export[part]["sha256"]:
                raise WeightsError(f"{path}: sha256 does not match its manifest (corrupt or replaced)")
            sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        self.features_session, self.head_session = sessions
        self.config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)

    def neck(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32) ->
        neck output per level (strides 8, 16, 32), Tensor[B, C, H/s, W/s]."""
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"NanoDet input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        images = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(p) for p in self.features_session.run(None, {"images": images})]

    def head(self, pyramid: list[Tensor]) -> NanoDetOutput:
        """Neck output per level, Tensor[B, C, H/s, W/s] -> NanoDetOutput."""
        inputs = {name: p.detach().to("cpu", torch.float32).contiguous().numpy() for name, p in zip(("p8", "p16", "p32"), pyramid)}
        cls_scores, box_dists = self.head_session.run(None, inputs)
        shapes = tuple((p.shape[2], p.shape[3]) for p in pyramid)
        return NanoDetOutput(torch.from_numpy(cls_scores), torch.from_numpy(box_dists), shapes, tuple(self.config.strides))

    def __call__(self, x: Tensor) -> NanoDetOutput:
        """x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32) -> NanoDetOutput."""
        return self.head(self.neck(x))

    def eval(self) -> "OnnxNanoDet":
        return self
