"""Many videos: discovery, per-video isolation, the run manifest, resume.

``vidtag-run.json`` in the output folder holds one record per input video
(see the spec in README).  It is rewritten atomically after every video, so
after a crash or Ctrl-C it tells the truth about what is complete.  A rerun
skips videos already done with the same options and redoes the rest, and
first removes what a killed run left half-written (its staging folders and
temporary files), which no reader ever took for an output.

Two drivers share the lock, the manifest and the skip check:
:func:`run_batch` detects the videos one by one in this process, and
:func:`run_batch_parallel` hands them to an executor (worker processes, a Ray
cluster) that runs :func:`process_video` for each and returns its record.
Only the driver writes the manifest.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from vidtag.errors import OutputError, VidtagError
from vidtag.pipeline import STAGING_DIR

log = logging.getLogger(__name__)

MANIFEST_NAME = "vidtag-run.json"
LOCK_NAME = ".vidtag.lock"
VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv".split()
)


@dataclass(frozen=True)
class VideoTask:
    """One input video and where its outputs go.

    Attributes:
        path: the video file.
        stem: its outputs are ``<stem><suffix>`` (the file name without its
            extension; also the video's name inside COCO and MOT JSON files).
        subdir: the folder under the output folder they are written in, as a
            relative POSIX path ("" for the output folder itself): the input's
            folder tree mirrored (see :func:`find_videos`).
    """

    path: Path
    stem: str
    subdir: str = ""

    @property
    def output_name(self) -> str:
        """``subdir/stem`` (or ``stem``): the outputs' path under the output folder, suffix left out."""
        return f"{self.subdir}/{self.stem}" if self.subdir else self.stem


ANNOTATED_SUFFIX = ".annotated.mp4"
"""The annotated video's suffix (vidtag.formats): a file named so is vidtag's output, never an input."""


def find_videos(sources: Sequence[str | Path], recursive: bool = False, output: str | Path | None = None) -> list[VideoTask]:
    """Expand files and folders into video tasks whose outputs never collide.

    A file named on the command line is always taken (so a bad file gets its
    own error) and its outputs go straight into the output folder.  A folder
    ``F`` contributes the files whose suffix is a known video suffix (searched
    recursively with ``recursive``); the outputs of ``F/a/b.mp4`` go into
    ``<output>/a/`` (its path relative to ``F``, as the output spec says).  What vidtag
    wrote is never taken from a folder: files inside ``output``, annotated
    videos (``*.annotated.mp4``), staging folders, and files that a
    ``vidtag-run.json`` beside or above them lists as outputs.

    Output names depend only on the input, never on the rest of the batch.

    Raises:
        VidtagError: a folder holds no video files.
        ValueError: two inputs would write the same outputs (e.g. ``x.mp4`` and
            ``x.mkv`` in one folder); the message names both.
    """
    out_root = Path(os.path.abspath(output)) if output is not None else None
    listed: dict[Path, frozenset[str]] = {}  # folder -> absolute paths its vidtag-run.json lists as outputs
    tasks: list[VideoTask] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            pattern = source.rglob("*") if recursive else source.iterdir()
            found = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            found = [p for p in found if not _is_output(p, source, out_root, listed)]
            if not found:
                hint = "" if recursive else " (use --recursive to search subfolders)"
                raise VidtagError(f"{source}: no video files found{hint}")
            for p in found:
                subdir = p.relative_to(source).parent.as_posix()
                tasks.append(VideoTask(p, p.stem, "" if subdir == "." else subdir))
        else:
            tasks.append(VideoTask(source, source.stem))
    unique: dict[str, VideoTask] = {}
    for task in tasks:
        unique.setdefault(os.path.abspath(task.path), task)
    owners: dict[str, Path] = {}
    for task in unique.values():
        other = owners.setdefault(task.output_name, task.path)
        if other != task.path:
            raise ValueError(f"{other} and {task.path} would both write {task.output_name}.*: "
                             "run them with different -o folders")
    return list(unique.values())


OUTPUT_MARKERS = frozenset({STAGING_DIR})


def _is_output(path: Path, source: Path, out_root: Path | None, listed: dict[Path, frozenset[str]]) -> bool:
    """Whether ``path`` (found under folder ``source``) is something vidtag wrote."""
    absolute = Path(os.path.abspath(path))
    if path.name.lower().endswith(ANNOTATED_SUFFIX) or not OUTPUT_MARKERS.isdisjoint(path.parts):
        return True
    if out_root is not None and (absolute == out_root or out_root in absolute.parents):
        return True
    top = Path(os.path.abspath(source))
    for folder in (absolute.parent, *absolute.parent.parents):
        if folder not in listed:
            listed[folder] = _listed_outputs(folder)
        if str(absolute) in listed[folder]:
            return True
        if folder == top:
            break
    return False


def _listed_outputs(folder: Path) -> frozenset[str]:
    """Absolute paths of the outputs listed by ``folder/vidtag-run.json`` (none if absent or unreadable)."""
    try:
        records = json.loads((folder / MANIFEST_NAME).read_text())["videos"]
        return frozenset(str(folder / out["file"]) for r in records for out in r.get("outputs", {}).values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def fingerprint(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex of the first MiB): cheap identity of a file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return size, digest


def options_key(options: dict) -> str:
    """A short hash of the options that change a video's outputs."""
    blob = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Manifest:
    """``vidtag-run.json``: one record per input video, keyed by absolute path."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / MANIFEST_NAME
        self.records: dict[str, dict] = {}
        self.created = _now()
        if self.path.exists():
            self._load()
        self._loaded = list(self.records)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            records = data["videos"]
            self.created = data.get("created", self.created)
            self.records = {r["path"]: r for r in records}
        except (OSError, ValueError, KeyError, TypeError) as err:
            backup = self.path.with_name(f"{MANIFEST_NAME}.unreadable-{int(time.time())}")
            os.replace(self.path, backup)
            log.warning("%s: unreadable manifest (%s); kept as %s and starting a new one", self.path, err, backup.name)
            self.records = {}

    def get(self, path: Path) -> dict | None:
        return self.records.get(os.path.abspath(path))

    def owner(self, output_name: str, path: Path) -> str | None:
        """The input, other than ``path``, whose finished results are ``output_name.*``; None if no other."""
        me = os.path.abspath(path)
        for r in self.records.values():
            if r["path"] != me and r.get("status") in ("done", "skipped") and r.get("output_name", r.get("stem")) == output_name:
                return r["path"]
        return None

    def put(self, record: dict) -> None:
        self.records[record["path"]] = record
        self.save()

    def arrange(self, paths: Sequence[str]) -> None:
        """Order the records as a sequential run over ``paths`` would have.

        Records that were in the file when it was loaded keep their place;
        the new ones follow in the order of ``paths`` (absolute), not in the
        order a parallel run happened to finish them.
        """
        rank = {p: i for i, p in enumerate(paths)}
        loaded = [p for p in self._loaded if p in self.records]
        known = set(loaded)
        new = sorted((p for p in self.records if p not in known), key=lambda p: rank.get(p, len(rank)))
        self.records = {p: self.records[p] for p in loaded + new}

    def save(self) -> None:
        """Rewrite the file atomically.

        Raises:
            OutputError: it cannot be written (disk full, ...); the file on
                disk is then the previous, complete one.
        """
        from vidtag import __version__

        data = {
            "tool": "vidtag",
            "version": __version__,
            "created": self.created,
            "updated": _now(),
            "videos": list(self.records.values()),
        }
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
        except OSError as err:
            raise OutputError(f"{self.path}: cannot update the run manifest ({err.strerror or err}); "
                              "it still lists the videos finished before") from err


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class OutputLock:
    """An exclusive lock on an output folder, so two runs never interleave."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
        self._file = None

    def __enter__(self):
        while True:
            try:
                self._file = open(self.path, "a+")
            except OSError as err:
                raise OutputError(f"{self.path.parent}: cannot write output folder ({err.strerror or err})") from err
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.seek(0)
                holder = self._file.read().strip() or "another process"
                self._file.close()
                raise OutputError(f"{self.path.parent}: another vidtag run is writing here ({holder}); wait for it or use another --output")
            if self._holds_current_file():
                break
            # The run before us removed the lock file between our open and
            # flock: we hold a lock nobody else can see.  Lock the new file.
            self._file.close()
        self._note_holder()
        return self

    def _holds_current_file(self) -> bool:
        try:
            return os.fstat(self._file.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _note_holder(self) -> None:
        """Write our pid into the lock file, for the message a second run shows.

        Best effort: on a full disk even these few bytes may not fit, and the
        lock holds without them.
        """
        fd = self._file.fileno()
        try:  # unbuffered, so that closing the file has nothing left to flush
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        except OSError:
            pass

    def __exit__(self, *exc):
        try:
            self.path.unlink()  # before unlocking: a run that opens the old file sees it is gone
        except OSError:
            pass
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def remove_leftovers(out_dir: Path) -> None:
    """Remove what a killed run left half-written in ``out_dir``.

    Staging folders (outputs not yet moved into place) and the temporary
    files of the manifest and of the write probe.  Call it only while holding
    the :class:`OutputLock`: then no other run is writing them.
    """
    import shutil

    for staging in [out_dir / STAGING_DIR, *(p for p in out_dir.glob(f"**/{STAGING_DIR}") if p != out_dir / STAGING_DIR)]:
        if not staging.is_dir():
            continue
        for entry in staging.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        try:
            staging.rmdir()
        except OSError:
            pass
    for pattern in (f".{MANIFEST_NAME}.*.tmp", ".vidtag-write-test.*"):
        for leftover in out_dir.glob(pattern):
            try:
                leftover.unlink()
            except OSError:
                pass


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and check it is writable; OutputError otherwise."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".vidtag-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write output folder ({err.strerror or err})") from err
    return out_dir


@dataclass
class BatchSummary:
    """Counts of a batch run and the records of this run's videos."""

    records: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def ok(self) -> bool:
        return all(r["status"] in ("done", "skipped") for r in self.records)


EventFn = Callable[[str, VideoTask, dict | None], None]
"""on_event(kind, task, record): kind is 'start' (detection begins) or 'end' (record final)."""


def run_batch(
    tasks: Sequence[VideoTask],
    out_dir: str | Path,
    detect: Callable[[VideoTask], object],
    write: Callable[[VideoTask, object], dict],
    options: dict,
    *,
    overwrite: bool = False,
    on_event: EventFn | None = None,
) -> BatchSummary:
    """Run every task, isolated, keeping the manifest true.

    Each video is detected in the calling thread; its outputs are written in
    one background thread while the next video is detected, so writing (the
    annotated video above all) overlaps with inference.  At most one video
    waits to be written, so memory does not grow with the batch.

    Args:
        tasks: the videos.
        out_dir: output folder (created; must be writable).
        detect: detects one video and returns its result; raises VidtagError
            (or anything else) on failure.
        write: writes a result's outputs and returns ``{outputs, frames,
            seconds, fps, ...}`` for the manifest record.
        options: the options that define the outputs (part of the skip check).
        overwrite: redo videos already done with the same options.
        on_event: progress callback.

    Raises:
        OutputError: the output folder cannot be written, another run holds
            its lock, or the manifest cannot be updated (the batch stops).
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir = prepare_output_dir(out_dir)
    key = options_key(options)
    summary = BatchSummary()

    def finish(task: VideoTask, record: dict) -> None:
        _finish_record(manifest, summary, task, record, on_event)

    def settle(pending) -> None:
        """Wait for a background write and record its outcome."""
        task, record, future = pending
        try:
            record.update(future.result())
            record["status"] = "done"
        except BaseException as err:  # noqa: BLE001 - recorded, never lost
            record.update(status="failed", error=error_line(err, task.path))
        finish(task, record)

    with OutputLock(out_dir), ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="vidtag-write", initializer=_lower_thread_priority
    ) as writer:
        remove_leftovers(out_dir)
        manifest = Manifest(out_dir)
        pending = None
        try:
            for task in tasks:
                if on_event:
                    on_event("start", task, None)
                record = _prepare_record(task, key, options, manifest, out_dir, overwrite)
                future = None
                if record["status"] == "pending":
                    t0 = time.perf_counter()
                    try:
                        result = detect(task)
                        future = writer.submit(write, task, result)
                    except KeyboardInterrupt:
                        record.update(status="failed", error=f"{task.path}: interrupted",
                                      seconds=round(time.perf_counter() - t0, 3))
                        if pending is not None:
                            previous, pending = pending, None
                            settle(previous)
                        finish(task, record)
                        raise
                    except Exception as err:  # noqa: BLE001 - one bad video never stops the batch
                        record.update(status="failed", error=error_line(err, task.path))
                if pending is not None:
                    previous, pending = pending, None  # settled once, even if recording it fails
                    settle(previous)
                if future is not None:
                    pending = (task, record, future)
                else:
                    finish(task, record)
        finally:
            if pending is not None:
                previous, pending = pending, None
                settle(previous)
    return summary


def process_video(
    task: VideoTask,
    record: dict,
    detect: Callable[[VideoTask], object],
    write: Callable[[VideoTask, object], dict],
    *,
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> dict:
    """Detect and write one video, start to end; its record, ``done`` or ``failed``.

    What an executor's worker runs for each video of :func:`run_batch_parallel`
    (``detect`` and ``write`` as for :func:`run_batch`).  Errors of the types
    in ``catch`` become a failed record with the one-line error; others
    propagate, so an executor that retries can retry them.
    """
    try:
        record.update(write(task, detect(task)))
        record["status"] = "done"
    except catch as err:
        record.update(status="failed", error=error_line(err, task.path))
    return record


class Executor(Protocol):
    """Runs videos somewhere else (worker processes, a Ray cluster).

    ``run(items)`` starts every ``(task, record)`` (records from the driver,
    status ``pending``) and yields ``(task, final record)`` as each finishes,
    in any order, exactly once per item: a video whose worker failed for good
    comes back as a failed record, never not at all.  Closing the iterator
    early cancels what has not finished.
    """

    def run(self, items: Sequence[tuple[VideoTask, dict]]) -> Iterator[tuple[VideoTask, dict]]: ...


def run_batch_parallel(
    tasks: Sequence[VideoTask],
    out_dir: str | Path,
    executor: Executor,
    options: dict,
    *,
    overwrite: bool = False,
    on_event: EventFn | None = None,
) -> BatchSummary:
    """Like :func:`run_batch`, but the videos run on ``executor``, many at once.

    This process keeps the lock and is the only writer of the manifest; the
    workers write each video's outputs into ``out_dir`` (the same folder for
    every worker: a shared file system on a cluster) the same atomic way.
    The manifest and the summary list the videos in task order, as a
    sequential run would.  ``on_event`` gets ``start`` when a video is handed
    to the executor and ``end`` when its record is final.
    """
    out_dir = prepare_output_dir(out_dir)
    key = options_key(options)
    summary = BatchSummary()
    order = [os.path.abspath(t.path) for t in tasks]
    with OutputLock(out_dir):
        remove_leftovers(out_dir)
        manifest = Manifest(out_dir)
        items = []
        for task in tasks:
            record = _prepare_record(task, key, options, manifest, out_dir, overwrite)
            if record["status"] == "pending":
                items.append((task, record))
            else:
                _finish_record(manifest, summary, task, record, on_event)
        for task, _ in items:
            if on_event:
                on_event("start", task, None)
        finished = set()
        results = executor.run(items)
        try:
            for task, record in results:
                finished.add(record["path"])
                _finish_record(manifest, summary, task, record, on_event)
        except KeyboardInterrupt:
            _close(results)  # cancel what still runs, then say so
            for task, record in items:
                if record["path"] not in finished:
                    record.update(status="failed", error=f"{task.path}: interrupted")
                    _finish_record(manifest, summary, task, record, on_event)
            raise
        finally:
            _close(results)
            manifest.arrange(order)
            manifest.save()
    rank = {p: i for i, p in enumerate(order)}
    summary.records.sort(key=lambda r: rank.get(r["path"], len(rank)))
    return summary


def _close(results) -> None:
    close = getattr(results, "close", None)
    if close is not None:
        close()


def _prepare_record(task: VideoTask, key: str, options: dict, manifest: Manifest, out_dir: Path,
                    overwrite: bool) -> dict:
    """A new record for ``task``: ``pending`` (to do), ``skipped`` (done before)
    or ``failed`` (the input cannot be read)."""
    record = _base_record(task, key, options)
    try:
        record["size"], record["sha256_first_mib"] = fingerprint(task.path)
    except OSError as err:
        record.update(status="failed", error=f"{task.path}: {_os_cause(err)}")
        return record
    owner = manifest.owner(task.output_name, task.path)
    if owner is not None:
        record.update(status="failed", error=f"{task.path}: {out_dir / task.output_name}.* hold the results of {owner} "
                                             "from an earlier run; use another -o folder")
        return record
    previous = manifest.get(task.path)
    if not overwrite and _still_done(previous, record, out_dir):
        record.update(status="skipped", outputs=previous["outputs"], frames=previous.get("frames"),
                      seconds=previous.get("seconds"), fps=previous.get("fps"))
    return record


def _finish_record(manifest: Manifest, summary: BatchSummary, task: VideoTask, record: dict,
                   on_event: EventFn | None) -> None:
    """Store a final record and report it.

    The event is sent even when the manifest cannot be written (a full disk),
    so the video's own outcome is shown before the manifest's error.
    """
    summary.records.append(record)
    try:
        if record["status"] == "done":
            _remove_stale_outputs(manifest.get(task.path), record, manifest.path.parent)
        manifest.put(_finish(record))
    finally:
        if on_event:
            on_event("end", task, record)


def _remove_stale_outputs(previous: dict | None, record: dict, out_dir: Path) -> None:
    """Delete the files of ``previous`` (the same input's last record) that ``record``'s
    outputs do not replace: a video's outputs are always one set, of one run's options."""
    if not previous:
        return
    keep = {out["file"] for out in record.get("outputs", {}).values()}
    for out in previous.get("outputs", {}).values():
        if out["file"] not in keep:
            try:
                (out_dir / out["file"]).unlink(missing_ok=True)
                log.info("%s: removed (written with other options before)", out_dir / out["file"])
            except OSError as err:
                log.warning("%s: could not remove an output of other options (%s)", out_dir / out["file"], _os_cause(err))


def _lower_thread_priority() -> None:
    """Give the writer thread (and the encoder threads it starts) a lower CPU
    priority, so writing fills the gaps inference leaves instead of slowing it.
    Linux nice values are per thread; elsewhere this does nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def error_line(err: BaseException, path: Path) -> str:
    """One line for the manifest and the terminal, naming the file."""
    if isinstance(err, KeyboardInterrupt):
        return f"{path}: interrupted"
    if isinstance(err, VidtagError):
        return _one_line(err, path)
    log.debug("unexpected error on %s", path, exc_info=(type(err), err, err.__traceback__))
    return f"{path}: {type(err).__name__}: {_one_line(err)}"


def _base_record(task: VideoTask, key: str, options: dict) -> dict:
    return {
        "path": os.path.abspath(task.path),
        "stem": task.stem,
        "output_name": task.output_name,
        "size": None,
        "sha256_first_mib": None,
        "status": "pending",
        "error": None,
        "outputs": {},
        "frames": None,
        "seconds": None,
        "fps": None,
        "options_key": key,
        "options": options,
        "finished": None,
    }


def _finish(record: dict) -> dict:
    record["finished"] = _now()
    return record


def _still_done(previous: dict | None, record: dict, out_dir: Path) -> bool:
    """True when ``previous`` is a complete run of the same file with the same options."""
    if not previous or previous.get("status") not in ("done", "skipped"):
        return False
    same = all(previous.get(k) == record[k] for k in ("options_key", "size", "sha256_first_mib"))
    if not same:
        return False
    for out in previous.get("outputs", {}).values():
        p = out_dir / out["file"]
        if not p.is_file() or p.stat().st_size != out["bytes"]:
            return False
    return bool(previous.get("outputs"))


def _os_cause(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, PermissionError):
        return "permission denied"
    return err.strerror or str(err)


def _one_line(err: BaseException, path: Path | None = None) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if path is not None and str(path) not in text:
        text = f"{path}: {text}"
    return text


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
