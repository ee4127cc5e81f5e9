"""The ``vidtag`` command: a thin click layer over :mod:`vidtag.api`.

The only module that talks to the terminal.  Exit codes: 0 when every video
succeeded, 1 when any failed, 2 for usage errors.
"""

from __future__ import annotations

import os

if os.environ.get("VIDTAG_MALLOC_TUNING", "1") != "0":  # the command's own process: before numpy / torch start threads
    from vidtag.heap import limit_heap_growth

    limit_heap_growth()
    os.environ["VIDTAG_MALLOC_TUNING"] = "1"  # its --workers processes opt in on `import vidtag`

import functools  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from vidtag.types import LINK_METHODS as LINK_CHOICES  # noqa: E402  (the registries)
from vidtag.types import METHODS as METHOD_CHOICES  # noqa: E402

FORMAT_CHOICES = ("coco", "mot", "mot-json", "csv", "mp4", "cvat", "labelstudio")  # vidtag.formats.FORMATS, without importing numpy
DEFAULT_FORMATS = ("coco", "mot", "mot-json", "csv", "mp4")  # vidtag.formats.DEFAULT_FORMATS


def _console(stderr: bool = False):
    """A rich console; without a terminal (a log file, a pipe) lines are never wrapped."""
    import shutil

    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=max(shutil.get_terminal_size((10_000, 24)).columns, 10_000))
    return console


def handle_errors(fn):
    """Turn known errors into one clear line and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vidtag.errors import VidtagError

        try:
            return fn(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except ValueError as err:
            raise click.UsageError(str(err)) from None
        except VidtagError as err:
            _console(stderr=True).print(f"[red]error:[/red] {_plain(err)}", soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _console(stderr=True).print("[yellow]interrupted[/yellow]: finished videos are kept; rerun to do the rest")
            sys.exit(130)

    return wrapper


def _plain(text) -> str:
    """``text`` (a path, an error) escaped so rich shows it as it is: a
    ``[ray]`` or ``[h264 @ 0x...]`` in it is not markup."""
    from rich.markup import escape

    return escape(str(text))


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    console = _console(stderr=True)
    if console.is_terminal:
        handler = RichHandler(console=console, show_time=False, show_path=False)
    else:  # a log file or a pipe: one unpadded, unwrapped line per message
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler], format="%(message)s", force=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidtag")
def main():
    """vidtag: detect and track objects in videos, offline."""


def _split_commas(ctx, param, value):
    if not value:
        return None
    names = [v.strip() for item in value for v in item.split(",") if v.strip()]
    return tuple(names) or None


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="frame", show_default=True, help="frame: NanoDet-g per frame; psla: key frames + sparse local attention; iff: 20-frame feature-flow aggregation (both experimental).")
@click.option("--key-interval", type=click.IntRange(min=1), default=10, show_default=True, help="psla: frames per segment; the middle one is the key frame.")
@click.option("--psla-weights", type=click.Path(exists=True, dir_okay=False), default=None, help="psla: modules manifest from `vidtag train psla` [default: shipped].")
@click.option("--window", type=click.IntRange(min=0), default=20, show_default=True, help="iff: neighbours aggregated per frame (even; +-window/2).")
@click.option("--clean-gate", type=click.FloatRange(0, 1), default=None, help="iff: a frame whose detector confidence is at least this fraction of its window's median keeps its own boxes (exactly --method frame's); 0 aggregates every frame.  [default: the modules' manifest]")
@click.option("--carry/--no-carry", default=None, help="iff: a frame the clean gate finds degraded also takes the boxes that the nearest clean frames before and after it both see, interpolated between them.  [default: the modules' manifest]")
@click.option("--iff-module", type=click.Choice(("advanced", "basic")), default=None, help="iff: which shipped IFF module [default: advanced; with --iff-weights: the file's].")
@click.option("--iff-weights", type=click.Path(exists=True, dir_okay=False), default=None, help="iff: modules manifest from `vidtag train iff` [default: shipped].")
@click.option("--runtime", type=click.Choice(["auto", "torch", "openvino", "openvino-f32", "onnxruntime"]), default="auto", show_default=True, help="What runs the network: auto = OpenVINO (bf16 where the CPU has it) on the CPU where the export has the method's graphs (psla: for its modules' split), torch otherwise.")
@click.option("--vid-stride", type=click.IntRange(min=1), default=1, show_default=True, help="frame: run the network on every K-th frame and carry its boxes over the frames between (linked tracks are interpolated).")
@click.option("--link", type=click.Choice(LINK_CHOICES), default="seqnms+", show_default=True, help="Link boxes over time into tracks.")
@click.option("--cut-threshold", type=click.FloatRange(0, 1), default=0.4, show_default=True, help="Hard cuts: a frame whose thumbnail correlates below this with the one before starts a new shot; no track crosses it, psla restarts, iff windows stop. 0: off.")
@click.option("--conf", type=click.FloatRange(0, 1), default=0.25, show_default=True, help="Minimum score kept.")
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.6, show_default=True, help="NMS: a box overlapping a higher-scoring box of its class by more than this IoU is dropped.")
@click.option("--max-det", type=click.IntRange(min=1), default=100, show_default=True, help="Most boxes kept per frame.")
@click.option("--start", default=None, help="Detect from this time (12.5, 12.5s, 1:02) or frame (300f) on; frame numbers and times in the outputs stay the video's.")
@click.option("--end", default=None, help="Stop before this time or frame (same forms as --start).")
@click.option("--classes", multiple=True, callback=_split_commas, help="Keep only these classes: names or 0-based ids, e.g. person,car or 0,2 (`vidtag models --classes`).")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMAT_CHOICES), help="Output format; repeat for several. [default: coco, mot, mot-json, csv, mp4]")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("vidtag-out"), show_default=True, help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Redo videos already done with the same options.")
@click.option("--recursive", "-r", is_flag=True, help="Search folders recursively for videos.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or N (a CUDA index).")
@click.option("--line-width", type=click.IntRange(min=1), default=None, help="Annotated MP4: box line width in pixels [default: scales with the frame].")
@click.option("--hide-labels", is_flag=True, help="Annotated MP4: draw boxes without labels.")
@click.option("--hide-conf", is_flag=True, help="Annotated MP4: labels without scores.")
@click.option("--imgsz", type=int, default=416, show_default=True, help="Network input size (longest side), multiple of 32.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Frames per inference batch.  [default: 4 on the CPU, 8 on CUDA]")
@click.option("--weights", default=None, help="Weights name (see `vidtag models`) or manifest/.pt path.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors and the summary.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes, each on its own video. One process already keeps 2 cores mostly busy; more workers pay off with more cores.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="One task per video on a Ray cluster: alone, find or start one (ray.init()); or auto, HOST:PORT, ray://HOST:10001, local. Needs `pip install 'vidtag[ray]'`; put it after the videos.")
@handle_errors
def detect(sources, method, key_interval, psla_weights, window, clean_gate, carry, iff_module, iff_weights, runtime, vid_stride, link, cut_threshold, conf, iou, max_det, start, end, classes, formats, output, overwrite, recursive, device, line_width, hide_labels, hide_conf, imgsz, batch, weights, quiet, workers, ray_address):
    """Detect, link and write results for video files and folders."""
    from vidtag.api import Runner, Settings, annotate, driver_runner
    from vidtag.batch import find_videos

    _setup_logging(quiet)
    _check_ray_address(ray_address, workers)
    _check_detect_usage(sources, output, weights, classes, start, end)
    if vid_stride > 1 and method != "frame":
        raise click.UsageError(f"--vid-stride works with --method frame only (got --method {method})")
    if clean_gate is not None and method != "iff":
        raise click.UsageError(f"--clean-gate works with --method iff only (got --method {method})")
    if carry is not None and method != "iff":
        raise click.UsageError(f"--carry / --no-carry work with --method iff only (got --method {method})")
    settings = Settings(method=method, link=link, conf=conf, classes=classes, imgsz=imgsz,
                        batch=batch, device=device, weights=weights, key_interval=key_interval,
                        psla_weights=psla_weights, window=window, clean_gate=clean_gate, carry=carry, iff_module=iff_module, iff_weights=iff_weights,
                        cut_threshold=cut_threshold, vid_stride=vid_stride, runtime=runtime, iou=iou, max_det=max_det, start=start, end=end,
                        line_width=line_width, hide_labels=hide_labels, hide_conf=hide_conf)
    formats = _formats_for_link(formats, link)
    tasks = find_videos(sources, recursive=recursive, output=output)
    parallel = ray_address is not None or workers > 1
    if ray_address is not None:
        from vidtag.cluster import import_ray

        import_ray()  # before loading the model: a missing extra is a one-line error at once
    # --workers: a worker checks the settings (annotate); the driver loads no model
    runner = None if workers > 1 and ray_address is None else driver_runner(settings) if parallel else Runner(settings)
    console = _console(stderr=True)
    with BatchProgress(console, len(tasks), quiet, parallel=parallel) as progress:
        summary = annotate(tasks, output, formats, settings, overwrite=overwrite, runner=runner,
                           on_event=progress.on_event, on_progress=progress.on_progress,
                           workers=workers, ray=ray_address)
    _print_summary(console, summary, output, quiet)
    sys.exit(0 if summary.ok else 1)


def _check_detect_usage(sources, output: Path, weights: str | None, classes, start=None, end=None) -> None:
    """Usage errors found before any model loads: a missing input, ``-o`` naming a
    file, weights that do not exist or are not a detector's, unknown classes, bad times."""
    from vidtag.api import class_indices
    from vidtag.io.decode import Span

    try:
        Span.from_text(start, end)
    except ValueError as err:
        raise click.UsageError(f"--start/--end: {err}") from None
    from vidtag.errors import WeightsError
    from vidtag.weights import resolve_detector_weights

    missing = [str(s) for s in sources if not Path(s).exists()]
    if missing:
        raise click.UsageError(f"{', '.join(missing)}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise click.UsageError(f"-o {output}: is a file; give a folder for the outputs")
    try:
        manifest = resolve_detector_weights(weights or "nanodet-g-coco")
    except WeightsError as err:
        raise click.UsageError(str(err)) from None
    if classes:
        class_indices(classes, manifest.classes)  # ValueError: a usage error


TRACK_FORMATS = ("mot", "mot-json")
"""Formats that hold tracked boxes only: empty without linking."""


def _formats_for_link(formats: tuple[str, ...], link: str) -> tuple[str, ...]:
    """The formats to write: all by default; without linking the track-only formats
    are refused when asked for and left out (saying so) by default."""
    if link != "none":
        return formats or DEFAULT_FORMATS
    asked = [f for f in formats if f in TRACK_FORMATS]
    if asked:
        raise click.UsageError(f"--format {', '.join(asked)} holds tracks, and --link none makes none: "
                               "link (--link seqnms+) or choose other formats")
    if not formats:
        logging.getLogger("vidtag").warning("--link none: no MOT files (they hold tracks only); track_id stays empty in the CSV")
        return tuple(f for f in DEFAULT_FORMATS if f not in TRACK_FORMATS)
    if "csv" in formats:
        logging.getLogger("vidtag").warning("--link none: track_id stays empty in the CSV")
    return formats


def _check_ray_address(address: str | None, workers: int) -> None:
    """Usage errors of --ray: with --workers, or a video taken for the address."""
    if address is None:
        return
    if workers > 1:
        raise click.UsageError("--workers and --ray do not go together: Ray decides where each video runs")
    if address and Path(address).exists():
        raise click.UsageError(f"--ray took {address!r} as the cluster address; put --ray after the videos "
                               "(vidtag detect DIR --ray [ADDRESS])")


class BatchProgress:
    """Rich progress bars on a terminal; plain lines otherwise.

    With ``parallel`` (worker processes, a Ray cluster) many videos run at
    once and frame progress stays in the workers: the bar counts finished
    videos and shows how many are still in flight, and each finished video
    gets a line ``[done/total] NAME: ...``.
    """

    def __init__(self, console, total_videos: int, quiet: bool, parallel: bool = False):
        self.console = console
        self.total = total_videos
        self.quiet = quiet
        self.parallel = parallel
        self.live = console.is_terminal and not quiet
        self.index = 0
        self.finished = 0
        self._progress = None
        self._last_line = 0.0

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
            )
            self._progress.start()
            self._batch = self._progress.add_task("videos", total=self.total, rate="")
            self._video = None
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, kind, task, record):
        if self.parallel:
            self._on_parallel_event(kind, task, record)
            return
        if kind == "start":
            self.index += 1
            self._started = time.perf_counter()
            if self._progress is not None:
                if self._video is not None:
                    self._progress.remove_task(self._video)
                self._video = self._progress.add_task(task.path.name[:40], total=None, rate="")
            elif not self.quiet:
                self.console.print(f"[{self.index}/{self.total}] {_plain(task.path)}", soft_wrap=True)
        else:
            status = record["status"]
            line = _record_line(record)
            if self._progress is not None:
                self._progress.advance(self._batch)
                if self._video is not None and status != "done":
                    self._progress.remove_task(self._video)
                    self._video = None
                self._progress.console.print(f"{_plain(task.path.name)}: {line}", soft_wrap=True)
            elif not self.quiet or status == "failed":
                # the line names its video (a failure's error does): it can come after the next
                # video's heading, since writing overlaps the next detection
                named = line if status == "failed" else f"{_plain(task.path)}: {line}"
                self.console.print(f"  {named}", soft_wrap=True)

    def _on_parallel_event(self, kind, task, record):
        if kind == "start":
            self.index += 1
            if self._progress is not None:
                self._progress.update(self._batch, rate=f"{self.index - self.finished} in flight")
            return
        self.finished += 1
        status = record["status"]
        line = f"[{self.finished}/{self.total}] {_plain(task.path.name)}: {_record_line(record)}"
        if self._progress is not None:
            self._progress.update(self._batch, advance=1, rate=f"{max(0, self.index - self.finished)} in flight")
            self._progress.console.print(line, soft_wrap=True)
        elif not self.quiet or status == "failed":
            in_flight = f" ({self.index - self.finished} in flight)" if self.index > self.finished else ""
            self.console.print(f"{line}{in_flight}", soft_wrap=True)

    def on_progress(self, stage, done, total):
        if self._progress is not None and self._video is not None:
            elapsed = time.perf_counter() - self._started
            rate = f"{done / elapsed:.1f} frames/s" if elapsed > 0 else ""
            self._progress.update(self._video, completed=done, total=total or None, rate=rate,
                                  description=f"{stage} {self.index}/{self.total}")
        elif not self.quiet and (time.perf_counter() - self._last_line > 10 or done == total):
            self._last_line = time.perf_counter()
            self.console.print(f"  {stage}: {done}/{total} frames")


def _record_line(record: dict) -> str:
    """What a finished video's record says, as rich markup: done (frames, speed), skipped, or failed (why)."""
    if record["status"] == "done":
        return f"done: {record['frames']} frames, {record['fps']} frames/s"
    if record["status"] == "skipped":
        return "skipped: already done with the same options"
    return f"[red]failed[/red]: {_plain(record['error'])}"


def _print_summary(console, summary, output, quiet):
    done, skipped, failed = summary.count("done"), summary.count("skipped"), summary.count("failed")
    console.print(f"{done} done, {skipped} skipped, {failed} failed -> {_plain(output)}/ (manifest: {_plain(output)}/vidtag-run.json)",
                  soft_wrap=True)


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.argument("results", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Annotated .mp4 to write.")
@click.option("--line-width", type=click.IntRange(min=1), default=None, help="Box line width in pixels [default: scales with the frame].")
@click.option("--hide-labels", is_flag=True, help="Draw boxes without labels.")
@click.option("--hide-conf", is_flag=True, help="Labels without scores.")
@handle_errors
def render(video, results, output, line_width, hide_labels, hide_conf):
    """Draw saved COCO results (RESULTS.coco.json) on VIDEO."""
    from vidtag.pipeline import render_saved

    _setup_logging(True)
    for given, role in ((video, "the input video"), (results, "the results file")):
        if given.exists() and output.exists() and os.path.samefile(given, output) or os.path.abspath(given) == os.path.abspath(output):
            raise click.UsageError(f"-o {output} is {role}: writing it would destroy it; choose another file")
    from vidtag.formats.video import DrawStyle

    frames = render_saved(video, results, output, DrawStyle(line_width=line_width, labels=not hide_labels, conf=not hide_conf))
    _console().print(f"wrote {output} ({frames} frames)")


@main.command("eval")
@click.argument("pred", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.argument("gt", type=click.Path(exists=True, path_type=Path))
@click.option("--class-map", type=click.Path(exists=True, path_type=Path), default=None,
              help="JSON {pred_name: gt_name} or two-column CSV; COCO->VID is built in.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures as JSON.")
@click.option("--per-class/--no-per-class", default=True, show_default=True, help="Show per-class VID AP.")
@handle_errors
def evaluate(pred, gt, class_map, json_path, per_class):
    """Score PRED (vidtag .coco.json files or a folder) against GT (CocoVID JSON or ImageNet VID folder)."""
    import json

    from rich.table import Table

    from vidtag.batch import atomic_write_text
    from vidtag.eval import evaluate as run_eval
    from vidtag.eval.report import format_rows

    result = run_eval(list(pred) if len(pred) > 1 else pred[0], gt, class_map)
    table = Table(title=f"{', '.join(p.name for p in pred)} vs {gt.name}")
    for col in ("section", "metric", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for row in format_rows(result, per_class=per_class):
        table.add_row(*row)
    _console().print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        _console().print(f"wrote {json_path}")


@main.group()
def train():
    """Train vidtag's temporal modules on your own footage."""


def _frame_range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(stop)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use START:STOP (half-open, frame indices)") from None


def _training_inputs(sources) -> list[Path]:
    """Training inputs: files as given; a folder gives its videos and still photos (sorted, not recursive)."""
    from vidtag.batch import VIDEO_SUFFIXES
    from vidtag.synth import IMAGE_SUFFIXES

    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            inside = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | set(IMAGE_SUFFIXES))
            if not inside:
                raise ValueError(f"{source}: no videos or images in this folder")
            found.extend(inside)
        else:
            found.append(source)
    return found


def _training_ranges(videos, ranges) -> tuple[tuple[int, int], ...]:
    """--frames per input (START:STOP, half-open), or every frame of each video and
    ``SYNTH_FRAMES`` of each still photo's synthetic clip."""
    from vidtag.io.decode import probe
    from vidtag.train.data import SYNTH_FRAMES, is_image

    if ranges and len(ranges) != len(videos):
        raise ValueError(f"--frames given {len(ranges)} times for {len(videos)} inputs: give one START:STOP per input")
    if ranges:
        return tuple(_frame_range(r) for r in ranges)
    return tuple((0, SYNTH_FRAMES) if is_image(v) else (0, probe(v).num_frames) for v in videos)


def _train_and_report(method: str, train_fn, config, output: Path, name: str) -> None:
    """Run a training with progress lines, write the manifest, say how to use the result."""
    import json

    from vidtag.train.loop import write_manifest

    output.mkdir(parents=True, exist_ok=True)
    console = _console(stderr=True)
    extra = ", trl {trl:.4f}" if method == "iff" else ""

    def on_log(info):
        console.print(
            f"step {info['step']}/{info['steps']}  loss {info['total']:.4f} (cls {info['cls']:.4f}, box {info['box']:.4f}, "
            f"feature {info['feature']:.4f}{extra.format(**info)})  {info['steps_per_s']:.2f} steps/s  eta {info['eta_s'] / 60:.1f} min"
        )

    result = train_fn(config, on_log=on_log)
    command = f"vidtag train {method} " + " ".join(sys.argv[3:])
    manifest = write_manifest(result, config, config.checkpoint, name, command)
    final = json.dumps({k: round(v, 4) for k, v in result.final_losses().items()})
    _console().print(f"wrote {config.checkpoint} and {manifest} ({result.steps} steps, {result.wall_s:.0f} s; final losses {final})")
    _console().print(f"use them: vidtag detect VIDEO --method {method} --{method}-weights {manifest}")


@train.command("psla")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for psla-nanodet-g.pt and its manifest.")
@click.option("--frames", "ranges", multiple=True, help="START:STOP frames to train on, one per input in order [default: every frame; 48 for a photo].")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Optimiser steps (2 clips each).")
@click.option("--time-limit", type=click.FloatRange(min=1), default=None, help="Stop after this many seconds (the schedule is kept).")
@click.option("--imgsz", type=int, default=416, show_default=True, help="Training input size (longest side), multiple of 32.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of module init, clips, crops and degradations.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [default: torch's].")
@click.option("--affinity", type=click.Choice(("key_transformed", "memory")), default="memory", show_default=True, help="Non-key PSLA affinity: memory (the paper's) or key_transformed.")
@click.option("--offset-prior", type=float, default=5.0, show_default=True, help="PSLA's learnt per-offset bias starts with this bonus for the same cell (a fresh module copies rather than blurs); 0: no bias, the paper's softmax.")
@click.option("--labels", type=click.Path(exists=True, path_type=Path), default=None, help="CocoVID JSON / ImageNet VID folder for a detection loss instead of distillation.")
@handle_errors
def train_psla_command(videos, output, ranges, steps, time_limit, imgsz, seed, threads, affinity, offset_prior, labels):
    """Train the PSLA + RFU + DenseFT modules on VIDEOS, no labels needed.

    VIDEOS are video files, still photos (each becomes a synthetic clip: camera
    pans, zooms, shake and moving pasted objects, see vidtag.synth) or folders
    of both.

    The frozen per-frame NanoDet-g sees clean frames; the PSLA student sees
    frames degraded by vidtag.degrade, with random camera-motion crops.  With
    --labels the student learns from those boxes instead (NanoDet's GFL loss).
    """
    from vidtag.models.psla import PSLAConfig
    from vidtag.train.loop import TrainConfig, train_psla

    videos = _training_inputs(videos)
    frames = _training_ranges(videos, ranges)
    config = TrainConfig(
        videos=tuple(str(v) for v in videos), frames=frames, steps=steps, imgsz=imgsz, seed=seed, threads=threads,
        time_limit_s=time_limit, labels=str(labels) if labels else None, log_every=25,
        psla=PSLAConfig(fusion_init_logit=4.0, nonkey_affinity=affinity, offset_prior=offset_prior or None,
                        displacement_scaling="stride"),
        checkpoint=str(output / "psla-nanodet-g.pt"), checkpoint_every=200,
    )
    _train_and_report("psla", train_psla, config, output, "psla-nanodet-g")


@train.command("iff")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the modules file and its manifest.")
@click.option("--frames", "ranges", multiple=True, help="START:STOP frames to train on, one per input in order [default: every frame; 48 for a photo].")
@click.option("--module", type=click.Choice(("advanced", "basic")), default="advanced", show_default=True, help="IFF module to train.")
@click.option("--trl", type=click.FloatRange(min=0), default=0.65, show_default=True, help="Weight (lambda) of the transformation residual loss; 0 turns it off.")
@click.option("--learn-temperature/--no-learn-temperature", default=True, show_default=True, help="Learn a scale on the FGFA cosine similarities (the paper has none).")
@click.option("--match-window/--no-match-window", default=True, show_default=True, help="Weigh each of the 2 drawn neighbours as 10 frames in the softmax, as the 20-frame test window weighs them (off: the paper's 3-frame softmax).")
@click.option("--steps", type=click.IntRange(min=1), default=1500, show_default=True, help="Optimiser steps (2 samples of 3 frames each).")
@click.option("--time-limit", type=click.FloatRange(min=1), default=None, help="Stop after this many seconds (the schedule is kept).")
@click.option("--imgsz", type=int, default=416, show_default=True, help="Training input size (longest side), multiple of 32.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of module init, samples, crops and degradations.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [default: torch's].")
@click.option("--labels", type=click.Path(exists=True, path_type=Path), default=None, help="CocoVID JSON / ImageNet VID folder for a detection loss instead of distillation.")
@handle_errors
def train_iff_command(videos, output, ranges, module, trl, learn_temperature, match_window, steps, time_limit, imgsz, seed, threads, labels):
    """Train the IFF-Net modules (feature flow + aggregation) on VIDEOS, no labels needed.

    Each step warps two random neighbours from +-10 frames onto a frame.  The
    frozen NanoDet-g sees clean frames, the student degraded ones; TRL aligns
    the warped clean features.  --no-learn-temperature --no-match-window is the
    paper's recipe.  With --labels the student learns from those
    boxes instead.
    """
    from vidtag.models.iff import IFFConfig
    from vidtag.train.iff import IFFTrainConfig, train_iff

    videos = _training_inputs(videos)
    frames = _training_ranges(videos, ranges)
    name = "iff" + ("-basic" if module == "basic" else "") + ("-notrl" if trl == 0 else "") + "-nanodet-g"
    config = IFFTrainConfig(
        videos=tuple(str(v) for v in videos), frames=frames, steps=steps, imgsz=imgsz, seed=seed, threads=threads,
        time_limit_s=time_limit, labels=str(labels) if labels else None, log_every=25, match_window=match_window,
        iff=IFFConfig(module=module, trl_weight=trl, learn_temperature=learn_temperature), checkpoint=str(output / f"{name}.pt"), checkpoint_every=200,
    )
    _train_and_report("iff", train_iff, config, output, name)


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Choice(["yolo", "coco-images", "cvat", "labelstudio"]), required=True,
              help="yolo: JPEG frames + YOLO labels + data.yaml; coco-images: JPEG frames + a COCO dataset; cvat, labelstudio: tool files per video.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to write into.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Image targets: every N-th frame.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Image targets: leave out boxes scoring below this.")
@handle_errors
def export_command(run_dir, target, output, every, min_score):
    """Export a finished run (RUN_DIR, the -o of vidtag detect) without detecting again."""
    from vidtag.export import export_run

    summary = export_run(run_dir, output, target, every=every, min_score=min_score)
    console = _console(stderr=True)
    for line in summary.skipped:
        console.print(f"skipped: {line}", soft_wrap=True)
    extra = f", {summary.images} images, {summary.boxes} boxes" if target in ("yolo", "coco-images") else ""
    console.print(f"{summary.videos} video(s) exported as {target}{extra} -> {output}", soft_wrap=True)
    sys.exit(0 if summary.videos or not summary.skipped else 1)


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@handle_errors
def info(video):
    """Print what the decoder sees in VIDEO."""
    from rich.table import Table

    from vidtag.io.decode import probe

    meta = probe(video)
    table = Table(title=str(video), show_header=False)
    for key in ("width", "height", "num_frames", "fps", "duration_s", "codec", "pixel_format", "rotation", "has_audio"):
        value = getattr(meta, key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    _console().print(table)


@main.command()
@click.option("--classes", "show_classes", is_flag=True, help="Print every class of the detector weights, with its id.")
@handle_errors
def models(show_classes):
    """List the shipped detector weights and temporal modules, and their manifest facts."""
    from rich.table import Table

    from vidtag.weights import default_weights_dir, list_weights

    console = _console()
    manifests = list_weights()
    if not manifests:
        console.print(f"no weights found in {default_weights_dir()}")
        return
    detectors = [m for m in manifests if m.kind == "detector"]
    if show_classes:
        for m in detectors:
            console.print(f"{m.name}: {len(m.classes)} classes (--classes takes names or these 0-based ids)")
            console.print("\n".join(f"{i:>4}  {c}" for i, c in enumerate(m.classes)), soft_wrap=True)
        return
    for heading, group in (("Detector weights (--weights)", detectors),
                           ("Temporal modules (--psla-weights, --iff-weights)", [m for m in manifests if m.kind != "detector"])):
        if not group:
            continue
        console.print(f"[bold]{heading}[/bold]")
        for m in group:
            table = _manifest_table(m, Table)
            if console.is_terminal:
                console.print(table)
            else:  # a pipe or a file: one unpadded "key: value" line per row
                console.print(_plain(table.title), soft_wrap=True)
                for key, value in zip(table.columns[0].cells, table.columns[1].cells):
                    console.print(f"  {key}: {_plain(value)}", soft_wrap=True)


def _manifest_table(m, table_class):
    """One manifest as a two-column table (paths of the machine that built it reduced to file names)."""
    table = table_class(title=f"{m.name} ({m.kind})" if m.kind != "detector" else m.name, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    source = m.source if isinstance(m.source, dict) else {"from": m.source}
    rows = {
        "file": f"{m.manifest_path.parent / m.file}",
        "sha256": m.sha256,
        "classes": f"{len(m.classes)} (`vidtag models --classes` lists them)",
        "input": f"{m.input_size} (multiple of {m.stride_multiple}), {m.channel_order}, mean {list(m.mean)}, std {list(m.std)}",
        "source": ", ".join(f"{k}: {v}" for k, v in source.items() if not isinstance(v, (dict, list))),
        "licences": ", ".join(m.licenses),
        "made by": " ".join(Path(w).name if "/" in w else w for w in str(m.made_by).split()),
        "measured": ", ".join(f"{k}: {v}" for k, v in (m.parity or {}).items() if not isinstance(v, (dict, list))),
    }
    if m.kind == "detector":
        export = (m.exports or {}).get("onnxruntime")
        files = ", ".join(export[part]["file"] for part in ("features", "head")) if export else ""
        psla = (export or {}).get("psla")
        if psla:
            files += f"; psla, split_stage {psla['split_stage']}, {psla['feature']} features: " + ", ".join(
                psla[part]["file"] for part in ("low", "high", "predict") if part in psla)
        methods = "--method frame, iff and psla" if psla else "--method frame and iff"
        rows["runtimes"] = "torch" + (f"; openvino and onnxruntime ({files}): --runtime auto runs OpenVINO for {methods} on the CPU" if files else "")
    if m.kind != "detector":
        rows["use"] = f"--method {m.kind} --{m.kind}-weights {m.manifest_path.name}"
    data = (m.training or {}).get("data") or []
    if data:
        rows["trained on"] = "; ".join(f"{d.get('file')} frames {d['frames'][0]}-{d['frames'][1] - 1}" if d.get("frames")
                                       else str(d.get("file")) for d in data)
    if (m.inference or {}).get("config"):
        config = m.inference["config"]
        rows["runs with"] = ", ".join(f"{k}={v}" for k, v in config.items())
        if config.get("nonkey_affinity") == "appearance" and not config.get("use_rfu", True):
            rows["runs with"] += (" (non-key frames use no trained module: the training data above does not"
                                  " limit which scenes it suits)")
        if m.inference.get("chosen_on"):
            rows["chosen on"] = ", ".join(m.inference["chosen_on"])
    for key, value in rows.items():
        if value:
            table.add_row(key, str(value))
    return table


if __name__ == "__main__":
    main()
