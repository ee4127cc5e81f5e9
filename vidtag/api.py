"""The Python API the CLI wraps.

>>> import vidtag
>>> result = vidtag.detect("examples/pedestrians.mp4", method="frame", classes=["person"])
>>> result.detections[0].boxes, result.detections[0].track_ids

:func:`annotate` is what ``vidtag detect`` runs: many videos, every format,
the run manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vidtag.batch import BatchSummary, EventFn, VideoTask, find_videos, run_batch
from vidtag.pipeline import ProgressFn, VideoDetections, detect_video, write_outputs

log = logging.getLogger(__name__)

LINK_METHODS = ("seqnms+", "seqnms", "none")


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run.  Defaults match the CLI's."""

    method: str = "frame"
    link: str = "seqnms+"
    conf: float = 0.25
    classes: tuple[str, ...] | None = None
    imgsz: int = 416
    batch: int = 8
    device: str = "auto"
    weights: str | None = None
    key_interval: int = 10  # psla: frames per segment (one key frame each)
    psla_weights: str | None = None  # psla: modules manifest (vidtag train psla); None = shipped
    iff_module: str | None = None  # iff: which shipped IFF module (advanced or basic); None: advanced, or iff_weights' own
    window: int = 20  # iff: neighbours aggregated per frame (+-window/2), even
    iff_weights: str | None = None  # iff: modules manifest (vidtag train iff); None = shipped

    def output_options(self, manifest) -> dict:
        """The options that change outputs (device and batch size do not)."""
        return {
            "method": self.method,
            "link": self.link,
            "conf": self.conf,
            "classes": sorted(self.classes) if self.classes else None,
            "imgsz": self.imgsz,
            "weights": manifest.name,
            "weights_sha256": manifest.sha256,
            **({"key_interval": self.key_interval, "psla_weights": self.psla_weights} if self.method == "psla" else {}),
            **({"iff_module": self.iff_module, "window": self.window, "iff_weights": self.iff_weights} if self.method == "iff" else {}),
        }


class Runner:
    """A loaded detector plus settings; reuse it for many videos."""

    def __init__(self, settings: Settings = Settings()):
        from vidtag.models.build import DetectOptions, build_detector, select_device

        if settings.link not in LINK_METHODS:
            raise ValueError(f"unknown link {settings.link!r}: choose from {', '.join(LINK_METHODS)}")
        if settings.batch < 1:
            raise ValueError(f"batch must be at least 1, got {settings.batch}")
        if not 0.0 <= settings.conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {settings.conf}")
        self.settings = settings
        self.device = select_device(settings.device)
        options = DetectOptions(conf=settings.conf, imgsz=settings.imgsz)
        if settings.key_interval < 1:
            raise ValueError(f"key interval must be at least 1, got {settings.key_interval}")
        psla_options = {"key_interval": settings.key_interval} if settings.method == "psla" else None
        iff_options = None
        if settings.method == "iff":
            iff_options = {"window": settings.window, **({"module": settings.iff_module} if settings.iff_module else {})}
        detector, manifest = build_detector(settings.method, settings.weights, options, self.device, psla_options,
                                            settings.psla_weights if settings.method == "psla" else None,
                                            iff_options, settings.iff_weights if settings.method == "iff" else None)
        if settings.classes:
            options = DetectOptions(conf=settings.conf, imgsz=settings.imgsz,
                                    classes=class_indices(settings.classes, manifest.classes))
            detector.options = options
        self.detector = detector
        self.manifest = manifest
        self.decode_device, self.decode_note = _decode_device(self.device)
        log.info("model %s on %s; %s", manifest.name, self.device, self.decode_note)

    @classmethod
    def with_detector(cls, detector, manifest, settings: Settings = Settings()) -> "Runner":
        """A runner around an already built detector (tests, custom models).

        ``manifest`` needs ``name`` and ``sha256``; ``detector`` needs
        ``classes`` and ``run(chunks) -> Iterator[Detections]``.
        """
        runner = cls.__new__(cls)
        runner.settings = settings
        runner.detector = detector
        runner.manifest = manifest
        runner.device = None
        runner.decode_device, runner.decode_note = "cpu", "decoding on CPU"
        return runner

    def detect(self, path: str | Path, on_progress: ProgressFn | None = None, keep_frames: bool = False) -> VideoDetections:
        """Detect and link one video; ``keep_frames`` keeps short videos' frames for rendering."""
        return detect_video(path, self.detector, link=self.settings.link, batch=self.settings.batch,
                            decode_device=self.decode_device, on_progress=on_progress, keep_frames=keep_frames)

    def run_info(self) -> dict:
        from vidtag import __version__

        return {
            "tool": "vidtag",
            "version": __version__,
            "method": self.settings.method,
            "link": self.settings.link,
            "weights": self.manifest.name,
            "weights_sha256": self.manifest.sha256,
            "options": self.settings.output_options(self.manifest),
        }


def class_indices(names: Sequence[str], classes: Sequence[str]) -> frozenset[int]:
    """Class names -> indices into ``classes``; ValueError naming unknown ones."""
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    unknown = [n for n in names if n.strip().lower() not in lookup]
    if unknown:
        raise ValueError(f"unknown class name(s): {', '.join(unknown)} (see `vidtag models` for the class list)")
    return frozenset(lookup[n.strip().lower()] for n in names)


def _decode_device(device) -> tuple[str, str]:
    """Where frames are decoded for ``device`` and a sentence saying why."""
    if device.type != "cuda":
        return "cpu", "decoding on CPU"
    from vidtag.io.decode import decode_backend

    where, reason = decode_backend(str(device))
    return str(device), f"decoding on {where} ({reason})"


def detect(
    path: str | Path,
    method: str = "frame",
    link: str = "seqnms+",
    conf: float = 0.25,
    classes: Sequence[str] | None = None,
    imgsz: int = 416,
    batch: int = 8,
    device: str = "auto",
    weights: str | None = None,
    key_interval: int = 10,
    window: int = 20,
) -> VideoDetections:
    """Detect (and link) objects in one video (``key_interval``: frames per segment for
    ``method="psla"``; ``window``: neighbours aggregated per frame for ``method="iff"``).

    Returns:
        VideoDetections: ``detections[i]`` holds frame i's boxes (xyxy source
        pixels), scores, labels (index into ``classes``) and track ids (from 1;
        None when ``link='none'``); ``timestamps[i]`` its time in seconds.
    """
    settings = Settings(method=method, link=link, conf=conf, classes=tuple(classes) if classes else None,
                        imgsz=imgsz, batch=batch, device=device, weights=weights, key_interval=key_interval, window=window)
    return Runner(settings).detect(path)


def annotate(
    sources: Sequence[str | Path],
    output: str | Path = "vidtag-out",
    formats: Sequence[str] = ("coco", "mot", "mot-json", "csv", "mp4"),
    settings: Settings = Settings(),
    *,
    recursive: bool = False,
    overwrite: bool = False,
    runner: Runner | None = None,
    on_event: EventFn | None = None,
    on_progress: ProgressFn | None = None,
) -> BatchSummary:
    """Detect, link and write every format for many videos (what ``vidtag detect`` does)."""
    from vidtag.formats import FORMATS

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)}: choose from {', '.join(FORMATS)}")
    formats = tuple(dict.fromkeys(formats))
    tasks = find_videos(sources, recursive=recursive)
    runner = runner or Runner(settings)
    run_info = runner.run_info()
    options = dict(run_info["options"], formats=sorted(formats))

    keep_frames = "mp4" in formats

    def detect(task: VideoTask) -> VideoDetections:
        return runner.detect(task.path, on_progress=on_progress, keep_frames=keep_frames)

    def write(task: VideoTask, result: VideoDetections) -> dict:
        written = write_outputs(result, formats, output, task.stem, run_info, batch=settings.batch)
        seconds = result.seconds + written.seconds
        return {
            "outputs": {fmt: {"file": p.name, "bytes": p.stat().st_size} for fmt, p in written.paths.items()},
            "frames": result.num_frames,
            "width": result.info.width,
            "height": result.info.height,
            "seconds": round(seconds, 3),
            "fps": round(result.num_frames / seconds, 2) if seconds > 0 else None,
            "detect_fps": round(result.fps, 2),
        }

    return run_batch(tasks, output, detect, write, options, overwrite=overwrite, on_event=on_event)
