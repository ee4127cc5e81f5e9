"""The one factory: a method name and weights -> a video detector.

A video detector sees a *stream* of frame chunks, not single images, so that
temporal methods (PSLA, IFF-Net) can keep state across frames and look ahead
within their window.  Every detector yields exactly one :class:`Detections`
per input frame, in frame order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from vidtag.models.video_detector import VideoDetectorBase
from vidtag.shots import CUT_THRESHOLD, ShotBoundaries
from vidtag.types import METHODS, Detections, FrameChunk  # METHODS: the registry, re-exported here

PSLA_WEIGHTS = "psla-nanodet-g.json"
"""Manifest of the trained PSLA + RFU + DenseFT modules in the weights folder."""

IFF_WEIGHTS = {"advanced": "iff-nanodet-g.json", "basic": "iff-basic-nanodet-g.json"}
"""Manifests of the trained IFF-Net modules (advanced / basic IFF module, both with TRL)."""


@dataclass(frozen=True)
class DetectOptions:
    """Thresholds applied after the network.

    Attributes:
        conf: minimum class score kept (NanoDet default 0.25 in vidtag's CLI).
        iou: IoU above which class-aware NMS drops a lower-scoring box.
        max_det: most boxes kept per frame.
        classes: class indices to keep, or None for all.
        imgsz: network input size of the longest side, a multiple of 32.
    """

    conf: float = 0.25
    iou: float = 0.6
    max_det: int = 100
    classes: frozenset[int] | None = None
    imgsz: int = 416

    def postprocess(self, output, box_map) -> list[Detections]:
        """Network output (NanoDetOutput, B frames) -> B Detections in source pixels, with these thresholds."""
        from vidtag.models.nanodet import postprocess

        return postprocess(output, box_map, conf_threshold=self.conf, iou_threshold=self.iou,
                           max_det=self.max_det, classes=self.classes)


class FrameDetector(VideoDetectorBase):
    """Per-frame detection: NanoDet-g on every frame independently.

    Args:
        model: a NanoDet network in eval mode on ``device``, or an exported
            runtime's engine (:mod:`vidtag.models.runtime`).
        classes: the model's class names (index = label).
        options: thresholds and input size.
        device: where the network runs.
        cut_threshold: hard cuts (:mod:`vidtag.shots`) are found with it for
            linking (``shot_starts``); 0 finds none.
        vid_stride: K: the network runs on frames 0, K, 2K, ...; the frames
            between get a copy of the last detected frame's boxes
            (:mod:`vidtag.stride`; the pipeline interpolates linked tracks
            over them).  Cuts are looked for among the detected frames only.
    """

    method = "frame"

    def __init__(self, model: torch.nn.Module, classes: tuple[str, ...], options: DetectOptions, device: torch.device,
                 cut_threshold: float = CUT_THRESHOLD, vid_stride: int = 1):
        if vid_stride < 1:
            raise ValueError(f"vid_stride must be >= 1, got {vid_stride}")
        super().__init__(model, classes, options, device)
        self.cut_threshold = cut_threshold
        self.vid_stride = vid_stride
        self._detected: list[int] = []  # with vid_stride > 1: the frames the network ran on (shots index them)

    @property
    def shot_starts(self) -> list[int]:
        """Frames of the last video that start a new shot (after ``run``); with
        ``vid_stride`` > 1 the cuts found among the detected frames, as video frames."""
        starts = super().shot_starts
        return starts if self.vid_stride == 1 else [self._detected[i] for i in starts]

    @torch.inference_mode()
    def detect_frames(self, frames: torch.Tensor, shots: ShotBoundaries | None = None,
                      source_wh: tuple[int, int] | None = None) -> list[Detections]:
        """frames (uint8 Tensor[B, H, W, 3], RGB) -> B Detections in source pixels;
        ``shots`` (the video's, when given) sees the frames too; ``source_wh``: the
        video's size when the decoder scaled the frames down (``FrameChunk.source_size``)."""
        from vidtag.models.preprocess import letterbox, pixel_thumbnails, resize_for_input
        from vidtag.models.runtime import ExportedNanoDet

        frames = frames.to(self.device, non_blocking=True)
        if not isinstance(self.model, ExportedNanoDet):
            x, box_map = letterbox(frames, self.options.imgsz, source_wh)
            if shots is not None:
                shots.push(x, box_map)
            return self.options.postprocess(self.model(x), box_map)
        # an exported network takes the resized pixels and normalises and pads them itself
        pixels, box_map = resize_for_input(frames, self.options.imgsz, source_wh)
        if shots is not None:
            shots.push_thumbnails(pixel_thumbnails(pixels)) if shots.threshold else shots.skip(len(pixels))
        return self.options.postprocess(self.model.from_pixels(pixels, box_map), box_map)

    def run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        """Yield one Detections per frame of ``chunks`` (one video), in order."""
        from vidtag.models.runtime import release_memory

        self.shots = ShotBoundaries(self.cut_threshold, self.options.imgsz)
        try:
            yield from self._run(chunks)
        finally:
            release_memory(self.model)  # the video is done: an exported network's buffers can go

    def _run(self, chunks: Iterable[FrameChunk]) -> Iterator[Detections]:
        if self.vid_stride == 1:
            for chunk in chunks:
                yield from self.detect_frames(chunk.frames, self.shots, chunk.source_size)
            return
        from vidtag.stride import is_detected

        self._detected = []
        held: Detections | None = None
        t = 0  # index of the chunk's first frame in the video
        for chunk in chunks:
            rows = [i for i in range(len(chunk)) if is_detected(t + i, self.vid_stride)]
            found = iter(self.detect_frames(chunk.frames[rows], self.shots, chunk.source_size) if rows else ())
            self._detected.extend(t + i for i in rows)
            for i in range(len(chunk)):
                if i in rows:
                    held = next(found)
                    yield held
                else:
                    yield held[np.arange(len(held))]  # a copy: linking must see separate frames
            t += len(chunk)


def normalise_device(device: str) -> str:
    """``"0"`` -> ``"cuda:0"`` (yolo's spelling); anything else unchanged."""
    device = str(device).strip()
    return f"cuda:{device}" if device.isdigit() else device


def select_device(device: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'N' (a CUDA index, as ``yolo predict --device 0``)
    -> a torch.device; ValueError if unavailable."""
    device = normalise_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but this torch build or machine has no CUDA")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


@dataclass(frozen=True)
class DetectorSettings:
    """What :func:`build_detector` builds: the method, its weights and options; checked on construction.

    Attributes:
        method: one of :data:`METHODS`.
        weights: a shipped weights name (``nanodet-g-coco``), a manifest .json or
            a .pt with its manifest beside it; None for the default.
        options: thresholds and input size.
        device: 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device.
        psla_options: PSLAConfig fields that override the shipped modules'
            config for ``method="psla"``, e.g. ``{"key_interval": 5}``; the
            inference-time ones are ``key_interval``, ``max_displacement``
            (ablation), ``use_rfu`` and ``use_denseft`` (switch a trained part
            off), ``psla_impl``.
        psla_weights: the PSLA modules' manifest (.json, or the .pt beside
            it), e.g. from ``vidtag train psla``; None for the shipped ones.
        iff_options: for ``method="iff"``: ``window`` (neighbours, even) and
            ``module`` (``"advanced"`` or ``"basic"``: which shipped modules).
        iff_weights: the IFF modules' manifest, e.g. from ``vidtag train iff``;
            None for the shipped ones of ``iff_options["module"]``.
        cut_threshold: the hard-cut test of :mod:`vidtag.shots` for any method
            (0: off); None keeps the default (frame: ``CUT_THRESHOLD``; PSLA /
            IFF: their modules' config).
        vid_stride: ``method="frame"`` only: run the network on every
            ``vid_stride``-th frame and hold its boxes between (:mod:`vidtag.stride`).
        runtime: what runs the network, one of :data:`vidtag.models.runtime.RUNTIMES`;
            the detector's ``runtime`` says which runs (e.g. ``"openvino (bf16)"``).

    Raises:
        ValueError: an unknown method, a stride below 1 or with a temporal
            method, an input size that is not a positive multiple of 32, PSLA or
            IFF options for ``method="frame"``.  The device, weights and the
            temporal options are checked by :func:`build_detector`.
    """

    method: str = "frame"
    weights: str | None = None  # None: nanodet-g-coco, the shipped NanoDet-g
    options: DetectOptions = DetectOptions()
    device: str | torch.device = "auto"  # auto: CUDA when there is one, else the CPU
    psla_options: dict | None = None  # None: the PSLA manifest's own inference config
    psla_weights: str | Path | None = None  # None: PSLA_WEIGHTS
    iff_options: dict | None = None  # None: the IFF manifest's own inference config
    iff_weights: str | Path | None = None  # None: IFF_WEIGHTS of the module
    cut_threshold: float | None = None
    vid_stride: int = 1  # 1: every frame runs the network
    runtime: str = "auto"  # auto: vidtag.models.runtime.resolve_runtime picks by method, device and weights

    def __post_init__(self):
        method, options = self.method, self.options
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
        if self.vid_stride < 1:
            raise ValueError(f"--vid-stride must be at least 1, got {self.vid_stride}")
        if self.vid_stride > 1 and method != "frame":
            raise ValueError(f"--vid-stride works with --method frame only (got --method {method})")
        if options.imgsz <= 0 or options.imgsz % 32:
            raise ValueError(f"--imgsz must be a positive multiple of 32, got {options.imgsz}")
        if method == "frame" and self.psla_options:
            raise ValueError(f"PSLA options {sorted(self.psla_options)} given for method {method!r}")
        if method == "frame" and self.iff_options:
            raise ValueError(f"IFF options {sorted(self.iff_options)} given for method {method!r}")


def build_detector(settings: DetectorSettings = DetectorSettings()):
    """Build a ready-to-run video detector.

    Args:
        settings: the method, weights, options, device and runtime
            (:class:`DetectorSettings`, checked when it was made).

    Returns:
        (detector, manifest): the detector (a :class:`vidtag.types.VideoDetector`)
        and the manifest of its NanoDet weights.

    Raises:
        ValueError: an unavailable device or runtime, temporal options that
            cannot change at inference.
        WeightsError: missing, unreadable or altered weights.
    """
    from vidtag.models.nanodet import load_nanodet
    from vidtag.models.runtime import load_engine, resolve_runtime
    from vidtag.weights import resolve_detector_weights

    method, options, cut_threshold = settings.method, settings.options, settings.cut_threshold
    psla_options, iff_options = settings.psla_options, settings.iff_options
    dev = settings.device if isinstance(settings.device, torch.device) else select_device(settings.device)
    manifest = resolve_detector_weights(settings.weights or "nanodet-g-coco")
    psla_modules = psla_split = None
    if method == "psla":  # the modules' split decides whether the export can run their network parts
        from vidtag.models.psla import PSLAConfig

        psla_modules = load_module_manifest(settings.psla_weights, PSLA_WEIGHTS, manifest, "PSLA")
        psla_split = PSLAConfig.from_saved(psla_modules[0]["psla_config"])
    engine = resolve_runtime(settings.runtime, method, dev, manifest, psla_split)  # psla: where the export has its split
    exported = None if engine == "torch" else load_engine(engine, manifest)
    model = exported if method == "frame" and exported is not None else load_nanodet(manifest).to(dev).eval()
    if cut_threshold is not None:
        if method == "psla":
            psla_options = {**(psla_options or {}), "cut_threshold": cut_threshold}
        elif method == "iff":
            iff_options = {**(iff_options or {}), "cut_threshold": cut_threshold}
    if method == "psla":
        detector = _build_psla(model, manifest, options, dev, psla_options or {}, psla_modules)
        detector.model.set_engine(exported)
    elif method == "iff":
        detector = _build_iff(model, manifest, options, dev, iff_options or {}, settings.iff_weights)
        detector.model.engine = exported
    else:
        cut = CUT_THRESHOLD if cut_threshold is None else cut_threshold
        detector = FrameDetector(model, tuple(manifest.classes), options, dev, cut, settings.vid_stride)
    detector.runtime = "torch" if exported is None else exported.runtime
    return detector, manifest


INFERENCE_PSLA_OPTIONS = ("key_interval", "max_displacement", "displacement_scaling", "use_rfu", "use_denseft", "psla_impl",
                          "cut_threshold", "quality_bias", "nonkey_affinity", "appearance_temperature", "appearance_prior",
                          "promote_below", "promote_mass_below", "two_sided")


def _build_psla(nanodet, base_manifest, options: DetectOptions, device: torch.device, overrides: dict, psla_modules=None):
    """Wrap NanoDet-g with PSLA modules: ``psla_modules`` = (manifest dict, file) from
    :func:`load_module_manifest` (None: the shipped ones, sha256 checked, base weights matched)."""
    from dataclasses import asdict

    from vidtag.models.psla import PSLAConfig, PSLAVideoDetector, build_psla

    psla_manifest, file = psla_modules or load_module_manifest(None, PSLA_WEIGHTS, base_manifest, "PSLA")
    unknown = sorted(set(overrides) - set(INFERENCE_PSLA_OPTIONS))
    if unknown:
        raise ValueError(f"PSLA options {unknown} cannot change at inference (allowed: {', '.join(INFERENCE_PSLA_OPTIONS)})")
    saved = PSLAConfig.from_saved(psla_manifest["psla_config"])
    model = build_psla(nanodet, saved)
    model.load_modules(file)
    # the manifest's own inference settings (chosen after training, see its "inference" record), then the caller's
    overrides = {**psla_manifest.get("inference", {}).get("config", {}), **overrides}
    if overrides:
        try:
            model.set_inference_config(PSLAConfig.from_saved(asdict(saved), **overrides))
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
    detector = PSLAVideoDetector(model.to(device).eval(), tuple(base_manifest.classes), options, device)
    detector.modules_file = file
    return detector


def load_module_manifest(path: str | Path | None, default_name: str, base_manifest, label: str) -> tuple[dict, Path]:
    """Read a temporal modules' manifest (``path``: the .json or the .pt beside it;
    None: ``default_name`` in the weights folder) and check its file's sha256
    and base weights.

    Returns:
        (manifest dict, path of the modules file).

    Raises:
        WeightsError: unreadable manifest, missing or altered file, other base weights.
    """
    import json

    from vidtag.errors import WeightsError
    from vidtag.weights import default_weights_dir, file_sha256

    manifest_path = default_weights_dir() / default_name if path is None else Path(path).with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
        file = manifest_path.parent / manifest["file"]
        base = manifest["base_weights"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"{manifest_path}: cannot read the {label} weights manifest ({err})") from None
    if not file.is_file():
        raise WeightsError(f"{file}: {label} weights file not found")
    if file_sha256(file) != manifest.get("sha256"):
        raise WeightsError(f"{file}: sha256 does not match its manifest (corrupt or replaced)")
    if base.get("sha256") != base_manifest.sha256:
        raise WeightsError(f"{file}: trained on {base.get('name')}, not on {base_manifest.name}")
    return manifest, file


INFERENCE_IFF_OPTIONS = ("window", "window_step", "module", "cut_threshold", "lookalike_threshold", "self_prior", "clean_gate", "fusion", "carry")


def _build_iff(nanodet, base_manifest, options: DetectOptions, device: torch.device, overrides: dict, iff_weights=None):
    """Wrap NanoDet-g with trained IFF modules (shipped ones by ``overrides["module"]``, or ``iff_weights``)."""
    from vidtag.models.iff import MODULES, IFFConfig, IFFVideoDetector, build_iff

    unknown = sorted(set(overrides) - set(INFERENCE_IFF_OPTIONS))
    if unknown:
        raise ValueError(f"IFF options {unknown} cannot change at inference (allowed: {', '.join(INFERENCE_IFF_OPTIONS)})")
    module = overrides.get("module") or "advanced"
    if module not in MODULES:
        raise ValueError(f"unknown IFF module {module!r}: choose from {', '.join(MODULES)}")
    iff_manifest, file = load_module_manifest(iff_weights, IFF_WEIGHTS[module], base_manifest, "IFF")
    # the manifest's own inference settings (chosen after training, see its "inference" record), then the caller's
    overrides = {**iff_manifest.get("inference", {}).get("config", {}), **overrides}
    saved = IFFConfig.from_saved(iff_manifest["iff_config"])
    if iff_weights is not None and "module" in overrides and saved.module != module:
        raise ValueError(f"{file}: holds a {saved.module} IFF module, not {module}")
    model = build_iff(nanodet, saved)
    model.load_modules(file)
    model.configure(**{k: overrides[k] for k in model.INFERENCE_FIELDS if k in overrides})  # ValueError names the setting
    detector = IFFVideoDetector(model.to(device).eval(), tuple(base_manifest.classes), options, device)
    detector.modules_file = file
    return detector
