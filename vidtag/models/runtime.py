"""Which engine runs the detector network: torch, OpenVINO or ONNX Runtime.

The weights' manifest ships NanoDet-g exported to ONNX (``exports.onnxruntime``,
made by ``tools/export_onnx.py``): backbone + neck, and head, as two graphs,
which OpenVINO and ONNX Runtime both run on the CPU.  ``--runtime``:

* ``auto`` (the default): OpenVINO when the network runs on the CPU, the
  method is ``frame`` or ``iff``, the export is there and the ``openvino``
  package imports; torch otherwise (CUDA, training, psla, whose network is
  split at the stem, where the export does not split it).
* ``openvino``: OpenVINO at bf16 where the CPU has bf16 units (AVX-512 BF16,
  AMX), f32 elsewhere; ``openvino-f32``: f32 always.  ``onnxruntime``: ONNX
  Runtime, f32.  ``torch``: eager torch.  ``benchmarks/bench_runtime.py``
  prints each one's speed and its AP50 against torch's boxes on the example
  clip (the check that lets bf16 be the default).

iff's own modules (embedding, flow, aggregation) stay in torch between the
two graphs.  Asking for an exported runtime where it cannot run is an error
that says why.  :class:`ExportedNanoDet` engines are called like
:class:`vidtag.models.nanodet.NanoDet`: normalised frames (Tensor[B, 3, H,
W], H and W multiples of 32) in, :class:`vidtag.models.nanodet.NanoDetOutput`
out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vidtag.errors import WeightsError
from vidtag.models.nanodet import NanoDetConfig, NanoDetOutput
from vidtag.weights import WeightsManifest, file_sha256

RUNTIMES = ("auto", "torch", "openvino", "openvino-f32", "onnxruntime")
_PACKAGES = {"openvino": "openvino", "openvino-f32": "openvino", "onnxruntime": "onnxruntime"}


def resolve_runtime(requested: str, method: str, device: torch.device, manifest: WeightsManifest) -> str:
    """``requested`` (one of :data:`RUNTIMES`) -> the runtime that runs: ``"torch"``,
    ``"openvino"``, ``"openvino-f32"`` or ``"onnxruntime"``.

    Raises:
        ValueError: an unknown runtime, or an exported runtime asked for where it cannot run.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}: choose from {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    engine = "openvino" if requested == "auto" else requested
    reason = None
    if device.type != "cpu":
        reason = f"the network runs on {device.type} (the exported runtimes run on the CPU)"
    elif method not in ("frame", "iff"):
        reason = f"--method {method} splits the network where the export does not"
    elif "onnxruntime" not in manifest.exports:
        reason = f"{manifest.name} ships no ONNX export (make one with tools/export_onnx.py)"
    else:
        try:
            __import__(_PACKAGES[engine])
        except ImportError:
            reason = f"the {_PACKAGES[engine]} package is not installed"
    if reason is None:
        return engine
    if requested != "auto":
        raise ValueError(f"--runtime {requested}: {reason}")
    return "torch"


def release_memory(model) -> None:
    """:meth:`ExportedNanoDet.release_memory` where ``model`` is an exported network; nothing for torch modules."""
    if isinstance(model, ExportedNanoDet):
        model.release_memory()


def load_engine(runtime: str, manifest: WeightsManifest, threads: int | None = None) -> "ExportedNanoDet":
    """The exported network for ``runtime`` (``"openvino"``, ``"openvino-f32"`` or ``"onnxruntime"``)."""
    if runtime == "onnxruntime":
        return OnnxNanoDet(manifest, threads)
    return OpenVinoNanoDet(manifest, threads, precision="f32" if runtime == "openvino-f32" else "auto")


class ExportedNanoDet:
    """NanoDet-g's two exported graphs (backbone + neck, head) behind one interface:
    :meth:`neck` and :meth:`head` are the parts, calling it runs both.

    Subclasses set ``config`` and implement :meth:`_run_features` and :meth:`_run_head`.

    Raises:
        WeightsError: a graph is missing, does not match its sha256, or was
            exported from other weights than the manifest's.
    """

    channels_last = False
    runtime = ""

    @staticmethod
    def graph_paths(manifest: WeightsManifest) -> dict:
        """The two graphs' paths (``"features"``, ``"head"``), checked against the manifest."""
        export = manifest.exports["onnxruntime"]
        if export.get("from_sha256") != manifest.sha256:
            raise WeightsError(f"{manifest.manifest_path}: its ONNX export was made from other weights than "
                               f"{manifest.file}; run tools/export_onnx.py again")
        paths = {}
        for part in ("features", "head"):
            path = manifest.weights_path.parent / export[part]["file"]
            if not path.is_file():
                raise WeightsError(f"{path}: ONNX export not found")
            if file_sha256(path) != export[part]["sha256"]:
                raise WeightsError(f"{path}: sha256 does not match its manifest (corrupt or replaced)")
            paths[part] = path
        return paths

    def neck(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32) ->
        neck output per level (strides 8, 16, 32), Tensor[B, C, H/s, W/s] float32."""
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"NanoDet input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        return [torch.from_numpy(p) for p in self._run_features(_numpy(x))]

    def head(self, pyramid: list[Tensor]) -> NanoDetOutput:
        """Neck output per level, Tensor[B, C, H/s, W/s] -> NanoDetOutput."""
        cls_scores, box_dists = self._run_head([_numpy(p) for p in pyramid])
        shapes = tuple((p.shape[2], p.shape[3]) for p in pyramid)
        return NanoDetOutput(torch.from_numpy(cls_scores), torch.from_numpy(box_dists), shapes, tuple(self.config.strides))

    def __call__(self, x: Tensor) -> NanoDetOutput:
        """x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32) -> NanoDetOutput."""
        return self.head(self.neck(x))

    def release_memory(self) -> None:
        """Free what the runtime keeps between calls (intermediate buffers); the next call
        allocates it again.  Detectors call it when a video ends, so the annotated MP4
        pass that follows does not add its memory to theirs."""

    def eval(self) -> "ExportedNanoDet":
        return self

    def _run_features(self, images: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def _run_head(self, pyramid: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


class OnnxNanoDet(ExportedNanoDet):
    """The export run by ONNX Runtime (f32) on the CPU; ``threads``: intra-op threads (default: torch's)."""

    runtime = "onnxruntime"

    def __init__(self, manifest: WeightsManifest, threads: int | None = None):
        import onnxruntime as ort

        paths = self.graph_paths(manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.features_session, self.head_session = (ort.InferenceSession(str(paths[part]), options, providers=["CPUExecutionProvider"])
                                                    for part in ("features", "head"))
        self.config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)

    def _run_features(self, images):
        return self.features_session.run(None, {"images": images})

    def _run_head(self, pyramid):
        return self.head_session.run(None, dict(zip(("p8", "p16", "p32"), pyramid)))


class OpenVinoNanoDet(ExportedNanoDet):
    """The export compiled by OpenVINO for the CPU.

    Args:
        precision: ``"auto"``: bf16 where the CPU has bf16 units, f32 elsewhere;
            ``"f32"``; ``"bf16"``.
        threads: inference threads (default: torch's).
    """

    def __init__(self, manifest: WeightsManifest, threads: int | None = None, precision: str = "auto"):
        import openvino as ov

        core = ov.Core()
        if precision == "auto":
            precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision must be auto, f32 or bf16, got {precision!r}")
        self.precision = precision
        self.runtime = f"openvino ({precision})"
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        paths = self.graph_paths(manifest)
        self.features_model, self.head_model = (core.compile_model(core.read_model(str(paths[part])), "CPU", config)
                                                for part in ("features", "head"))
        self.config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)

    def release_memory(self) -> None:
        self.features_model.release_memory()
        self.head_model.release_memory()

    def _run_features(self, images):
        out = self.features_model(images)
        return [np.asarray(out[self.features_model.output(i)]) for i in range(3)]

    def _run_head(self, pyramid):
        out = self.head_model(pyramid)
        return tuple(np.asarray(out[self.head_model.output(i)]) for i in range(2))
