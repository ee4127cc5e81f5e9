"""The Python API the CLI wraps.

>>> import vidtag
>>> result = vidtag.detect("examples/pedestrians.mp4", method="frame", classes=["person"])
>>> result.detections[0].boxes, result.detections[0].track_ids

:func:`annotate` is what ``vidtag detect`` runs: many videos, every format,
the run manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from vidtag.batch import BatchSummary, EventFn, RunRecord, VideoTask, find_videos, process_video, run_batch, run_batch_parallel
from vidtag.pipeline import ProgressFn, VideoDetections, detect_video, write_outputs
from vidtag.types import LINK_METHODS  # the registry

log = logging.getLogger(__name__)


CPU_BATCH = 4
"""Frames per inference batch on the CPU: OpenVINO and torch run 4 about as fast as 8 on a
few cores, and each frame of a batch holds its activations (``benchmarks/bench_e2e.py``
prints the memory)."""
CUDA_BATCH = 8
"""Frames per inference batch on CUDA."""


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run.  Defaults match the CLI's."""

    method: str = "frame"
    link: str = "seqnms+"
    conf: float = 0.25
    classes: tuple[str, ...] | None = None
    imgsz: int = 416
    batch: int | None = None  # frames per inference batch; None: CPU_BATCH on the CPU, CUDA_BATCH on CUDA
    device: str = "auto"
    weights: str | None = None
    key_interval: int = 10  # psla: frames per segment (one key frame each)
    psla_weights: str | None = None  # psla: modules manifest (vidtag train psla); None = shipped
    iff_module: str | None = None  # iff: which shipped IFF module (advanced or basic); None: advanced, or iff_weights' own
    window: int = 20  # iff: neighbours aggregated per frame (+-window/2), even
    iff_weights: str | None = None  # iff: modules manifest (vidtag train iff); None = shipped
    clean_gate: float | None = None  # iff: a frame seeing at least this fraction of its window's median confidence keeps its own boxes; 0: aggregate every frame; None: the modules' manifest
    carry: bool | None = None  # iff: a frame the gate finds degraded also takes the boxes its clean neighbours on both sides see; None: the modules' manifest
    iou: float = 0.6  # NMS IoU: a box overlapping a higher-scoring one of its class more than this is dropped
    max_det: int = 100  # most boxes kept per frame
    line_width: int | None = None  # annotated video: box line width in pixels; None scales with the frame
    hide_labels: bool = False  # annotated video: boxes without labels
    hide_conf: bool = False  # annotated video: labels without scores
    start: str | None = None  # first time or frame to detect ("12.5", "12.5s", "1:02", "300f"); None: the first
    end: str | None = None  # time or frame to stop before; None: the end of the video
    vid_stride: int = 1  # frame: the network runs on every vid_stride-th frame, boxes carried between (vidtag.stride)
    cut_threshold: float = 0.4  # vidtag.shots.CUT_THRESHOLD (not imported: it needs torch): hard cuts split tracks, PSLA segments, IFF windows; 0 = off
    runtime: str = "auto"  # what runs the network: auto (OpenVINO on the CPU; torch for PSLA modules split where the export is not), torch, openvino, openvino-f32, onnxruntime (vidtag.models.runtime)

    def draw_style(self):
        """The annotated video's :class:`vidtag.formats.video.DrawStyle`."""
        from vidtag.formats.video import DrawStyle

        return DrawStyle(line_width=self.line_width, labels=not self.hide_labels, conf=not self.hide_conf)

    def draw_style_options(self) -> dict:
        """The drawing options that differ from the defaults (they change the MP4 output)."""
        return {k: v for k, v in (("line_width", self.line_width), ("hide_labels", self.hide_labels),
                                  ("hide_conf", self.hide_conf)) if v}

    def batch_for(self, cuda: bool) -> int:
        """Frames per batch on CUDA (``cuda``) or the CPU: ``batch``, else CUDA_BATCH or CPU_BATCH."""
        return self.batch or (CUDA_BATCH if cuda else CPU_BATCH)

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
            "cut_threshold": self.cut_threshold,
            **({"vid_stride": self.vid_stride} if self.vid_stride > 1 else {}),
            **({"start": self.start} if self.start is not None else {}),
            **({"end": self.end} if self.end is not None else {}),
            **({"iou": self.iou} if self.iou != 0.6 else {}),
            **({"max_det": self.max_det} if self.max_det != 100 else {}),
            **({"draw": self.draw_style_options()} if self.draw_style_options() else {}),
            **({"key_interval": self.key_interval, "psla_weights": self.psla_weights} if self.method == "psla" else {}),
            **({"iff_module": self.iff_module, "window": self.window, "iff_weights": self.iff_weights} if self.method == "iff" else {}),
            **({"clean_gate": self.clean_gate} if self.method == "iff" and self.clean_gate is not None else {}),
            **({"carry": self.carry} if self.method == "iff" and self.carry is not None else {}),
        }


class Runner:
    """A loaded detector plus settings; reuse it for many videos."""

    def __init__(self, settings: Settings = Settings()):
        from vidtag.models.build import DetectOptions, DetectorSettings, build_detector, select_device

        if settings.link not in LINK_METHODS:
            raise ValueError(f"unknown link {settings.link!r}: choose from {', '.join(LINK_METHODS)}")
        if settings.batch is not None and settings.batch < 1:
            raise ValueError(f"batch must be at least 1, got {settings.batch}")
        if not 0.0 <= settings.conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {settings.conf}")
        self.settings = settings
        self.device = select_device(settings.device)
        if not 0.0 < settings.iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {settings.iou}")
        if settings.max_det < 1:
            raise ValueError(f"max_det must be at least 1, got {settings.max_det}")
        settings.draw_style()  # ValueError for a bad line width
        from vidtag.io.decode import Span

        self.span = Span.from_text(settings.start, settings.end)  # ValueError for a bad time
        options = DetectOptions(conf=settings.conf, imgsz=settings.imgsz, iou=settings.iou, max_det=settings.max_det)
        if settings.key_interval < 1:
            raise ValueError(f"key interval must be at least 1, got {settings.key_interval}")
        if not 0.0 <= settings.cut_threshold <= 1.0:
            raise ValueError(f"cut threshold must be in [0, 1] (0 = off), got {settings.cut_threshold}")
        psla_options = {"key_interval": settings.key_interval} if settings.method == "psla" else None
        iff_options = None
        if settings.method == "iff":
            iff_options = {"window": settings.window, **({"module": settings.iff_module} if settings.iff_module else {}),
                           **({"clean_gate": settings.clean_gate} if settings.clean_gate is not None else {}),
                           **({"carry": settings.carry} if settings.carry is not None else {})}
        detector, manifest = build_detector(DetectorSettings(
            settings.method, settings.weights, options, self.device,
            psla_options=psla_options, psla_weights=settings.psla_weights if settings.method == "psla" else None,
            iff_options=iff_options, iff_weights=settings.iff_weights if settings.method == "iff" else None,
            cut_threshold=settings.cut_threshold, vid_stride=settings.vid_stride, runtime=settings.runtime))
        if settings.classes:
            options = DetectOptions(conf=settings.conf, imgsz=settings.imgsz, iou=settings.iou, max_det=settings.max_det,
                                    classes=class_indices(settings.classes, manifest.classes))
            detector.options = options
        self.detector = detector
        self.manifest = manifest
        self.decode_device, self.decode_note = _decode_device(self.device)
        log.info("model %s on %s (%s); %s", manifest.name, self.device, detector.runtime, self.decode_note)

    @property
    def batch(self) -> int:
        """Frames per inference batch: the settings', else CPU_BATCH or CUDA_BATCH by device."""
        return self.settings.batch_for(self.device is not None and self.device.type == "cuda")

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
        return detect_video(path, self.detector, link=self.settings.link, batch=self.batch,
                            decode_device=self.decode_device, on_progress=on_progress, keep_frames=keep_frames,
                            span=getattr(self, "span", None))

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
    """Class names or 0-based ids (as ``yolo predict --classes`` takes them) -> indices into ``classes``.

    Raises:
        ValueError: names no class has, or ids out of range; the message
            suggests close names and says where the whole list is.
    """
    import difflib

    lookup = {c.lower(): i for i, c in enumerate(classes)}
    found, problems = set(), []
    for raw in names:
        name = raw.strip()
        if name.isdigit():
            if int(name) < len(classes):
                found.add(int(name))
            else:
                problems.append(f"{name} (ids run 0-{len(classes) - 1})")
        elif name.lower() in lookup:
            found.add(lookup[name.lower()])
        else:
            close = difflib.get_close_matches(name.lower(), list(lookup), n=3, cutoff=0.6)
            problems.append(f"{name!r}" + (f" (did you mean {' or '.join(repr(classes[lookup[c]]) for c in close)}?)" if close else ""))
    if problems:
        raise ValueError(f"unknown class(es): {', '.join(problems)}; `vidtag models --classes` lists all {len(classes)}")
    return frozenset(found)


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
    batch: int | None = None,
    device: str = "auto",
    weights: str | None = None,
    key_interval: int = 10,
    window: int = 20,
    cut_threshold: float = 0.4,
    vid_stride: int = 1,
) -> VideoDetections:
    """Detect (and link) objects in one video (``key_interval``: frames per segment for
    ``method="psla"``; ``window``: neighbours aggregated per frame for ``method="iff"``;
    ``cut_threshold``: the hard-cut test of :mod:`vidtag.shots`, 0 = off;
    ``vid_stride``: ``method="frame"`` on every K-th frame, boxes carried between).

    Returns:
        VideoDetections: ``detections[i]`` holds frame i's boxes (xyxy source
        pixels), scores, labels (index into ``classes``) and track ids (from 1;
        None when ``link='none'``); ``timestamps[i]`` its time in seconds.
    """
    settings = Settings(method=method, link=link, conf=conf, classes=tuple(classes) if classes else None,
                        imgsz=imgsz, batch=batch, device=device, weights=weights, key_interval=key_interval, window=window,
                        cut_threshold=cut_threshold, vid_stride=vid_stride)
    return Runner(settings).detect(path)


@dataclass(frozen=True)
class VideoJob:
    """What a batch does to each of its videos: detect, link, write every format.

    The same code runs for every video whether the batch runs in this
    process, in local worker processes or as Ray tasks; the job is picklable
    (settings, formats, folder, run info) so a worker can be handed one.

    Attributes:
        settings: the run's settings.
        formats: output formats, each once.
        output: the output folder.
        run_info: the driver's :meth:`Runner.run_info` (written into COCO
            ``info``); a worker whose weights give another refuses to run.
        make_runner: builds a worker's runner from the settings (must be
            picklable); None: ``Runner(settings)``.
    """

    settings: Settings
    formats: tuple[str, ...]
    output: Path
    run_info: dict
    make_runner: Callable[[Settings], "Runner"] | None = None

    @property
    def options(self) -> dict:
        """The options that define the outputs (the manifest's skip check)."""
        return dict(self.run_info["options"], formats=sorted(self.formats))

    def detect(self, runner: Runner, task: VideoTask, on_progress: ProgressFn | None = None) -> VideoDetections:
        """Detect and link one video (keeping short videos' frames when the annotated MP4 is wanted)."""
        return runner.detect(task.path, on_progress=on_progress, keep_frames="mp4" in self.formats)

    def write(self, task: VideoTask, result: VideoDetections) -> dict:
        """Write every format; the manifest fields of the video."""
        written = write_outputs(result, self.formats, self.output / task.subdir, task.stem, self.run_info,
                                batch=self.settings.batch_for(cuda=False), style=self.settings.draw_style())
        seconds = result.seconds + written.seconds
        return {
            "outputs": {fmt: {"file": p.relative_to(self.output).as_posix(), "bytes": p.stat().st_size}
                        for fmt, p in written.paths.items()},
            "frames": result.num_frames,
            "width": result.info.width,
            "height": result.info.height,
            "seconds": round(seconds, 3),
            "fps": round(result.num_frames / seconds, 2) if seconds > 0 else None,
            "detect_fps": round(result.fps, 2),
        }

    def process(self, task: VideoTask, record: RunRecord, catch=Exception) -> RunRecord:
        """Run one video in a worker: :func:`vidtag.batch.process_video` with
        this process's runner (built once, then reused for the next videos)."""
        return process_video(task, record, lambda t: self.detect(self.worker_runner(), t), self.write, catch=catch)

    def worker_runner(self) -> Runner:
        """This process's runner for the job, built on first use.

        Raises:
            WeightsError: the runner's weights or options differ from the
                driver's (another vidtag or other weights on this node).
        """
        cached = _process_runner(self.settings, self.make_runner)
        info = cached.run_info()
        if info != self.run_info:
            import socket

            from vidtag.errors import WeightsError

            raise WeightsError(f"{socket.gethostname()}: vidtag {info['version']} with weights {info['weights_sha256'][:12]} "
                               f"here, but the batch was started with vidtag {self.run_info['version']} and weights "
                               f"{self.run_info['weights_sha256'][:12]}: install the same vidtag on every node")
        return cached


_WORKER_RUNNER: dict = {}
"""The runner of the job a worker process last ran (see VideoJob.worker_runner)."""


def worker_run_info(settings: Settings, make_runner: Callable[[Settings], "Runner"] | None = None) -> dict:
    """In a worker process: build this process's runner for ``settings`` (kept for the
    videos it runs next, as :meth:`VideoJob.worker_runner` would) and return its
    :meth:`Runner.run_info`.  A ``--workers`` batch checks its settings this way, so the
    driver never loads torch or the model.

    Raises:
        the errors of building the runner (bad settings, weights).
    """
    return _process_runner(settings, make_runner).run_info()


def _process_runner(settings: Settings, make_runner: Callable[[Settings], "Runner"] | None) -> Runner:
    """This process's runner for ``settings``, built on first use; one per process, so memory stays bounded."""
    key = (settings, make_runner)
    if key not in _WORKER_RUNNER:
        _WORKER_RUNNER.clear()
        _WORKER_RUNNER[key] = (make_runner or Runner)(settings)
    return _WORKER_RUNNER[key]


def driver_runner(settings: Settings) -> Runner:
    """The runner a parallel batch's driver builds, on the CPU.

    It checks the settings and gives the run info; the workers do the work
    on ``settings.device``, which need not exist where the driver runs.
    """
    import re

    from vidtag.models.build import normalise_device

    settings = replace(settings, device=normalise_device(settings.device))
    if settings.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", settings.device):
        raise ValueError(f"unsupported device {settings.device!r}: use auto, cpu, cuda or cuda:N")
    return Runner(replace(settings, device="cpu"))


def annotate(
    sources: Sequence[str | Path | VideoTask],
    output: str | Path = "vidtag-out",
    formats: Sequence[str] = ("coco", "mot", "mot-json", "csv", "mp4"),
    settings: Settings = Settings(),
    *,
    recursive: bool = False,
    overwrite: bool = False,
    runner: Runner | None = None,
    on_event: EventFn | None = None,
    on_progress: ProgressFn | None = None,
    workers: int = 1,
    ray: str | None = None,
    make_runner: Callable[[Settings], Runner] | None = None,
) -> BatchSummary:
    """Detect, link and write every format for many videos (what ``vidtag detect`` does).

    ``sources``: files and folders (see :func:`vidtag.batch.find_videos` for
    where each video's outputs go), or the tasks it returned.

    By default the videos run one after the other in this process (with
    ``runner``, or one built from ``settings``).  ``workers=N`` runs them in
    N local worker processes; ``ray=ADDRESS`` as one task per video on a Ray
    cluster (``""``: find or start one, as ``ray.init()``; ``"auto"``,
    ``"HOST:PORT"``, ``"ray://HOST:10001"``, ``"local"``: see
    :func:`vidtag.cluster.connect`).  Parallel runs give the same outputs and
    manifest as a sequential one; each worker builds its runner with
    ``make_runner(settings)`` (default ``Runner(settings)``) and
    ``on_progress`` (frame progress) is not reported from workers.
    """
    from vidtag.formats import FORMATS

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)}: choose from {', '.join(FORMATS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    formats = tuple(dict.fromkeys(formats))
    given = [s for s in sources if isinstance(s, VideoTask)]
    tasks = given if len(given) == len(sources) else find_videos(sources, recursive=recursive, output=output)
    parallel = ray is not None or workers > 1
    local_workers = None
    if ray is None and workers > 1:
        from vidtag.parallel import ProcessExecutor

        local_workers = ProcessExecutor(None, workers)
    try:
        if runner is None and local_workers is not None and tasks:
            # a worker checks the settings by building its runner (kept for its videos): the driver loads no model
            run_info = local_workers.start(len(tasks)).call(worker_run_info, settings, make_runner)
        else:
            runner = runner or (driver_runner(settings) if parallel else Runner(settings))
            run_info = runner.run_info()
    except BaseException as err:
        if local_workers is not None:  # bad settings: return once the workers are gone (an interrupt does not wait)
            local_workers.close(wait=isinstance(err, Exception))
        raise
    job = VideoJob(settings, formats, Path(output), run_info, make_runner)

    if ray is not None:
        from vidtag.cluster import RayExecutor

        with RayExecutor(job, address=ray) as executor:
            return run_batch_parallel(tasks, output, executor, job.options, overwrite=overwrite, on_event=on_event)
    if local_workers is not None:
        local_workers.job = job
        try:
            return run_batch_parallel(tasks, output, local_workers, job.options, overwrite=overwrite, on_event=on_event)
        finally:
            local_workers.close()

    def detect(task: VideoTask) -> VideoDetections:
        return job.detect(runner, task, on_progress)

    return run_batch(tasks, output, detect, job.write, job.options, overwrite=overwrite, on_event=on_event)
