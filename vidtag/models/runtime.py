"""Which engine runs the detector network: torch, OpenVINO or ONNX Runtime.

The weights' manifest ships NanoDet-g exported to ONNX (``exports.onnxruntime``,
made by ``tools/export_onnx.py``): backbone + neck, and head, as two graphs,
which OpenVINO and ONNX Runtime both run on the CPU; and psla's split of the
same network (``exports.onnxruntime.psla``: ``low``, the backbone up to the
PSLA modules' ``split_stage``; ``high``, the rest of ``N_f`` from there; and
``predict``, ``N_t``), for the split and feature kind of the shipped PSLA
modules.  ``--runtime``:

* ``auto`` (the default): OpenVINO when the network runs on the CPU, the
  export is there (for psla: graphs for its modules' split, see
  :func:`psla_export_gap`) and the ``openvino`` package imports; torch
  otherwise (CUDA, training, PSLA modules split where no graph is).
* ``openvino``: OpenVINO at bf16 where the CPU has bf16 units (AVX-512 BF16,
  AMX), f32 elsewhere; ``openvino-f32``: f32 always.  ``onnxruntime``: ONNX
  Runtime, f32.  ``torch``: eager torch.  ``benchmarks/bench_runtime.py``
  prints each one's speed and its AP50 against torch's boxes on the example
  clip (the check that lets bf16 be the default).

iff's own modules (embedding, flow, aggregation) stay in torch between the
two graphs, and psla's (Transform Net, PSLA propagation or appearance
matching, RFU, DenseFT) between its three; each graph is compiled on first
use.  Asking for an exported runtime where it cannot run is an error that
says why.  :class:`ExportedNanoDet` engines are called like
:class:`vidtag.models.nanodet.NanoDet`: normalised frames (Tensor[B, 3, H,
W], H and W multiples of 32) in, :class:`vidtag.models.nanodet.NanoDetOutput`
out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pathlib import Path

from vidtag.errors import WeightsError
from vidtag.models.nanodet import NanoDetConfig, NanoDetOutput
from vidtag.ops.letterbox import Letterbox
from vidtag.weights import WeightsManifest, file_sha256

RUNTIMES = ("auto", "torch", "openvino", "openvino-f32", "onnxruntime")
_PACKAGES = {"openvino": "openvino", "openvino-f32": "openvino", "onnxruntime": "onnxruntime"}


def resolve_runtime(requested: str, method: str, device: torch.device, manifest: WeightsManifest,
                    psla_config=None) -> str:
    """``requested`` (one of :data:`RUNTIMES`) -> the runtime that runs: ``"torch"``,
    ``"openvino"``, ``"openvino-f32"`` or ``"onnxruntime"``.

    An exported runtime runs ``frame`` and ``iff`` wherever the manifest has an
    ONNX export, and ``psla`` where the export also has psla's graphs for the
    split of its modules (``psla_config``: their :class:`vidtag.models.psla.PSLAConfig`,
    or anything with its ``split_stage`` and ``feature``; None: the config's
    defaults), on the CPU.  ``"auto"`` takes OpenVINO there, torch elsewhere.

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
    elif method not in ("frame", "iff", "psla"):
        reason = f"--method {method} splits the network where the export does not"
    elif "onnxruntime" not in manifest.exports:
        reason = f"{manifest.name} ships no ONNX export (make one with tools/export_onnx.py)"
    elif method == "psla":
        reason = psla_export_gap(manifest, psla_config)
    if reason is None:
        try:
            __import__(_PACKAGES[engine])
        except ImportError:
            reason = f"the {_PACKAGES[engine]} package is not installed"
    if reason is None:
        return engine
    if requested != "auto":
        raise ValueError(f"--runtime {requested}: {reason}")
    return "torch"


def psla_export_gap(manifest: WeightsManifest, psla_config=None) -> str | None:
    """Why ``manifest``'s ONNX export cannot run psla's network parts for modules
    split as ``psla_config`` says (``split_stage``, ``feature``; None: PSLAConfig's
    defaults), or None when it can: its ``psla`` graphs were made for that split,
    from these weights."""
    if psla_config is None:
        from vidtag.models.psla import PSLAConfig

        psla_config = PSLAConfig()
    split, feature = psla_config.split_stage, psla_config.feature
    export = manifest.exports.get("onnxruntime", {}).get("psla")
    make = f"tools/export_onnx.py --weights {manifest.name} --psla MODULES_MANIFEST --only psla makes them"
    if export is None:
        return f"{manifest.name}'s ONNX export has no graphs for --method psla ({make})"
    if (export.get("split_stage"), export.get("feature")) != (split, feature):
        return (f"the PSLA modules split the network at backbone stage {split} with {feature!r} features; "
                f"{manifest.name}'s ONNX export has psla graphs for stage {export.get('split_stage')} with "
                f"{export.get('feature')!r} features ({make})")
    if export.get("from_sha256") != manifest.sha256:
        return f"{manifest.name}'s psla graphs were exported from other weights than {manifest.file} ({make})"
    return None


def release_memory(model) -> None:
    """:meth:`ExportedNanoDet.release_memory` where ``model`` is an exported network; nothing for torch modules."""
    if isinstance(model, ExportedNanoDet):
        model.release_memory()


def load_engine(runtime: str, manifest: WeightsManifest, threads: int | None = None) -> "ExportedNanoDet":
    """The exported network for ``runtime`` (``"openvino"``, ``"openvino-f32"`` or ``"onnxruntime"``)."""
    if runtime == "onnxruntime":
        return OnnxNanoDet(manifest, threads)
    return OpenVinoNanoDet(manifest, threads, precision="f32" if runtime == "openvino-f32" else "auto")


PSLA_PARTS = ("low", "high", "predict")
"""psla's graphs (``exports.onnxruntime.psla``): N_l, N_f from N_l's output, N_t (``feature="head"`` only)."""


class ExportedNanoDet:
    """NanoDet-g's exported graphs behind one interface: :meth:`neck` and
    :meth:`head` are the two parts the methods share, calling it runs both;
    :meth:`psla_low`, :meth:`psla_high` and :meth:`psla_predict` are psla's
    split (:class:`vidtag.models.psla.PSLADetector` calls them), whose graphs
    are checked and loaded on first use.

    Subclasses set ``config``, ``manifest`` and ``paths`` (:meth:`graph_paths`)
    and implement :meth:`_run`.

    Raises:
        WeightsError: a graph is missing, does not match its sha256, or was
            exported from other weights than the manifest's (the psla graphs:
            when first used).
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
        return {part: _checked_graph(manifest, export[part]) for part in ("features", "head")}

    @property
    def psla_split(self) -> tuple[int, str] | None:
        """(split_stage, feature) the psla graphs were made for; None without them."""
        export = self.manifest.exports["onnxruntime"].get("psla")
        return None if export is None else (export["split_stage"], export["feature"])

    def path(self, part: str) -> Path:
        """The checked path of graph ``part``: ``"features"``, ``"head"`` or one of :data:`PSLA_PARTS`."""
        if part not in self.paths:
            if part not in PSLA_PARTS:
                raise ValueError(f"no exported graph {part!r}")
            export = self.manifest.exports["onnxruntime"].get("psla") or {}
            if part not in export:
                raise WeightsError(f"{self.manifest.manifest_path}: its ONNX export has no psla {part} graph "
                                   f"(tools/export_onnx.py --only psla makes them)")
            if export.get("from_sha256") != self.manifest.sha256:
                raise WeightsError(f"{self.manifest.manifest_path}: its psla graphs were made from other weights than "
                                   f"{self.manifest.file}; run tools/export_onnx.py --only psla again")
            self.paths[part] = _checked_graph(self.manifest, export[part])
        return self.paths[part]

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

    def from_pixels(self, pixels: Tensor, box: Letterbox) -> NanoDetOutput:
        """pixels (uint8 Tensor[B, h, w, 3], RGB: the image region of the input, from
        :func:`vidtag.models.preprocess.resize_for_input` with ``box``) -> NanoDetOutput
        of the letterboxed input (normalised and padded as ``preprocess.letterbox`` does).
        Engines that can normalise and pad inside their graph override it."""
        from vidtag.models.preprocess import normalise_and_pad

        return self(normalise_and_pad(pixels, box))

    def release_memory(self) -> None:
        """Free what the runtime keeps between calls (intermediate buffers); the next call
        allocates it again.  Detectors call it when a video ends, so the annotated MP4
        pass that follows does not add its memory to theirs."""

    def eval(self) -> "ExportedNanoDet":
        return self

    # --- psla's split (PSLADetector.low_features, high_features, predict) ---

    def psla_low(self, x: Tensor) -> Tensor:
        """N_l: x (Tensor[B, 3, H, W] float32, normalised BGR, H and W multiples of 32) ->
        ``Fl`` Tensor[B, Cl, H/sl, W/sl], backbone stages ``0..split_stage``."""
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"NanoDet input H and W must be multiples of 32, got {tuple(x.shape[-2:])}")
        return torch.from_numpy(self._run("low", [_numpy(x)])[0])

    def psla_high(self, low: Tensor) -> list[Tensor]:
        """N_f from ``Fl`` (Tensor[B, Cl, h, w]) -> ``Fh`` per level (strides 8, 16, 32),
        Tensor[B, C, H/s, W/s]: the head levels' 3x3-conv outputs or the neck's."""
        return [torch.from_numpy(f) for f in self._run("high", [_numpy(low)])]

    def psla_predict(self, features: list[Tensor]) -> NanoDetOutput:
        """N_t: ``Fh`` per level (as from :meth:`psla_high`) -> NanoDetOutput."""
        if self.psla_split is not None and self.psla_split[1] == "neck":
            return self.head(features)
        cls_scores, box_dists = self._run("predict", [_numpy(f) for f in features])
        shapes = tuple((f.shape[2], f.shape[3]) for f in features)
        return NanoDetOutput(torch.from_numpy(cls_scores), torch.from_numpy(box_dists), shapes, tuple(self.config.strides))

    def _run_features(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run("features", [images])

    def _run_head(self, pyramid: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self._run("head", pyramid))

    def _run(self, part: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Graph ``part`` on ``inputs`` (in its inputs' order) -> its outputs, in order (copies)."""
        raise NotImplementedError


def _checked_graph(manifest: WeightsManifest, record: dict) -> Path:
    """The path of an exported graph (``record``: its ``file`` and ``sha256``), checked."""
    path = manifest.weights_path.parent / record["file"]
    if not path.is_file():
        raise WeightsError(f"{path}: ONNX export not found")
    if file_sha256(path) != record["sha256"]:
        raise WeightsError(f"{path}: sha256 does not match its manifest (corrupt or replaced)")
    return path


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


class OnnxNanoDet(ExportedNanoDet):
    """The export run by ONNX Runtime (f32) on the CPU; ``threads``: intra-op threads (default: torch's)."""

    runtime = "onnxruntime"

    def __init__(self, manifest: WeightsManifest, threads: int | None = None):
        import onnxruntime as ort

        self.manifest = manifest
        self.paths = self.graph_paths(manifest)
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads or torch.get_num_threads()
        self.options.inter_op_num_threads = 1
        self._sessions = {part: self._session(part) for part in ("features", "head")}  # psla's: on first use
        self.config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)

    def _session(self, part: str):
        import onnxruntime as ort

        return ort.InferenceSession(str(self.path(part)), self.options, providers=["CPUExecutionProvider"])

    def _run(self, part, inputs):
        if part not in self._sessions:
            self._sessions[part] = self._session(part)
        session = self._sessions[part]
        return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def cpu_pinning(threads: int) -> bool:
    """Whether OpenVINO should pin its ``threads`` inference threads to cores: only when
    they are as many as this process may use.  Each process pins from the first core
    on, so processes with fewer threads each (``--workers``, several vidtag runs) would
    all share the first cores and leave the others idle."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return threads >= cores


class OpenVinoNanoDet(ExportedNanoDet):
    """The export compiled by OpenVINO for the CPU.

    Compiled models, each compiled on first use: the two exported graphs
    (:meth:`neck`, :meth:`head`; iff runs its modules between them), both
    joined behind the letterbox's normalisation and padding (:meth:`from_pixels`,
    what ``--method frame`` runs: uint8 pixels in, no float input made outside),
    and psla's three (:meth:`psla_low`, :meth:`psla_high`, :meth:`psla_predict`).

    Args:
        precision: ``"auto"``: bf16 where the CPU has bf16 units, f32 elsewhere;
            ``"f32"``; ``"bf16"``.
        threads: inference threads (default: torch's).
    """

    def __init__(self, manifest: WeightsManifest, threads: int | None = None, precision: str = "auto"):
        import openvino as ov

        self.core = ov.Core()
        if precision == "auto":
            precision = "bf16" if "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision must be auto, f32 or bf16, got {precision!r}")
        self.precision = precision
        self.runtime = f"openvino ({precision})"
        threads = threads or torch.get_num_threads()
        self.compile_config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                               "ENABLE_CPU_PINNING": cpu_pinning(threads)}
        self.manifest = manifest
        self.paths = self.graph_paths(manifest)
        self._compiled: dict = {}  # "features" | "head" | "pixels" | PSLA_PARTS -> compiled model
        self.config = NanoDetConfig(num_classes=len(manifest.classes), input_size=manifest.input_size)

    def compiled(self, part: str):
        """The compiled model of ``part``: ``"features"``, ``"head"``, ``"pixels"`` (both,
        behind the letterbox) or one of psla's (:data:`PSLA_PARTS`)."""
        if part not in self._compiled:
            if part == "pixels":
                model = joined_from_pixels(self.core.read_model(str(self.paths["features"])),
                                           self.core.read_model(str(self.paths["head"])))
            else:
                model = self.core.read_model(str(self.path(part)))
            self._compiled[part] = self.core.compile_model(model, "CPU", self.compile_config)
        return self._compiled[part]

    def from_pixels(self, pixels: Tensor, box: Letterbox) -> NanoDetOutput:
        if pixels.dtype != torch.uint8:
            return super().from_pixels(pixels, box)
        batch, height, width, _ = pixels.shape
        input_w, input_h = box.input
        pads_begin = np.array([0, 0, box.pad_y, box.pad_x], np.int64)
        pads_end = np.array([0, 0, input_h - box.pad_y - height, input_w - box.pad_x - width], np.int64)
        model = self.compiled("pixels")
        out = model([pixels.contiguous().numpy(), pads_begin, pads_end])
        cls_scores, box_dists = (torch.from_numpy(np.asarray(out[model.output(i)])) for i in range(2))
        strides = tuple(self.config.strides)
        shapes = tuple((-(-input_h // s), -(-input_w // s)) for s in strides)
        return NanoDetOutput(cls_scores, box_dists, shapes, strides)

    def release_memory(self) -> None:
        for model in self._compiled.values():
            model.release_memory()

    def _run(self, part, inputs):
        model = self.compiled(part)
        out = model(inputs)  # copies the outputs (share_outputs=False): they outlive the next call
        return [np.asarray(out[output]) for output in model.outputs]


def joined_from_pixels(features, head):
    """The two exported graphs (``openvino.Model``: backbone + neck, head) as one model
    that starts from pixels: inputs ``pixels`` (uint8 [B, h, w, 3], RGB, the image
    region), ``pads_begin`` and ``pads_end`` (int64 [4], NCHW: rows and columns of
    padding above / left and below / right); output the head's (class scores, box
    distributions).  Inside: ``(x - mean) / std`` per channel, NHWC -> NCHW, zero
    padding (the mean colour, as ``preprocess.letterbox`` pads), then the graphs.
    The first convolution's input channels are reordered to take RGB (the network
    was trained on BGR), which is exact; both arguments are modified."""
    import openvino as ov
    import openvino.opset13 as ops

    from vidtag.models.preprocess import BGR_MEAN, BGR_STD

    image = features.get_parameters()[0]
    convolutions = [t.get_node() for t in image.output(0).get_target_inputs() if t.get_node().get_type_name() == "Convolution"]
    if len(convolutions) != 1:
        raise WeightsError(f"the exported backbone's input feeds {len(convolutions)} convolutions, expected 1")
    weights = convolutions[0].input_value(1).get_node().get_data()  # [C_out, 3 (BGR), k, k]
    convolutions[0].input(1).replace_source_output(ops.constant(np.ascontiguousarray(weights[:, ::-1])).output(0))

    pixels = ops.parameter([-1, -1, -1, 3], ov.Type.u8, name="pixels")
    pads_begin = ops.parameter([4], ov.Type.i64, name="pads_begin")
    pads_end = ops.parameter([4], ov.Type.i64, name="pads_end")
    rgb_scale = np.array([1.0 / s for s in BGR_STD[::-1]], np.float32)
    rgb_shift = np.array([-m / s for m, s in zip(BGR_MEAN[::-1], BGR_STD[::-1])], np.float32)
    x = ops.add(ops.multiply(ops.convert(pixels, ov.Type.f32), ops.constant(rgb_scale)), ops.constant(rgb_shift))
    x = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    x = ops.pad(x, pads_begin, pads_end, "constant", ops.constant(np.float32(0.0)))
    image.output(0).replace(x.output(0))
    for level, result in zip(head.get_parameters(), features.get_results()):
        level.output(0).replace(result.input_value(0))
    return ov.Model(head.get_results(), [pixels, pads_begin, pads_end], "nanodet_from_pixels")
