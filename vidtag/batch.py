"""Many videos: discovery, per-video isolation, the run manifest, resume.

``vidtag-run.json`` in the output folder holds one record per input video
(see the spec in README).  It is rewritten atomically after every video, so
after a crash or Ctrl-C it tells the truth about what is complete.  A rerun
skips videos already done with the same options and redoes the rest.
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from vidtag.errors import OutputError, VidtagError

log = logging.getLogger(__name__)

MANIFEST_NAME = "vidtag-run.json"
LOCK_NAME = ".vidtag.lock"
VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv".split()
)


@dataclass(frozen=True)
class VideoTask:
    """One input video and the stem its outputs are named after."""

    path: Path
    stem: str


def find_videos(sources: Sequence[str | Path], recursive: bool = False) -> list[VideoTask]:
    """Expand files and folders into video tasks with unique output stems.

    A file named on the command line is always taken (so a bad file gets its
    own error); a folder contributes the files whose suffix is a known video
    suffix, searched recursively with ``recursive``.

    Raises:
        VidtagError: a folder holds no video files.
    """
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            pattern = source.rglob("*") if recursive else source.iterdir()
            found = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            found = [p for p in found if OUTPUT_MARKERS.isdisjoint(p.parts)]
            if not found:
                hint = "" if recursive else " (use --recursive to search subfolders)"
                raise VidtagError(f"{source}: no video files found{hint}")
            paths.extend(found)
        else:
            paths.append(source)
    unique: list[Path] = []
    seen = set()
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return [VideoTask(p, s) for p, s in zip(unique, _unique_stems(unique))]


OUTPUT_MARKERS = frozenset({".vidtag-staging"})


def _unique_stems(paths: list[Path]) -> list[str]:
    """Video stems, prefixed with parent folder names where two would collide."""
    stems = [p.stem for p in paths]
    counts = Counter(stems)
    out = []
    for p, stem in zip(paths, stems):
        if counts[stem] > 1:
            parent = Path(os.path.abspath(p)).parent.name or "root"
            stem = f"{parent}__{stem}"
        out.append(stem)
    counts = Counter(out)
    seen: Counter = Counter()
    result = []
    for stem in out:
        if counts[stem] > 1:
            seen[stem] += 1
            stem = f"{stem}-{seen[stem]}"
        result.append(stem)
    return result


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

    def put(self, record: dict) -> None:
        self.records[record["path"]] = record
        self.save()

    def save(self) -> None:
        from vidtag import __version__

        data = {
            "tool": "vidtag",
            "version": __version__,
            "created": self.created,
            "updated": _now(),
            "videos": list(self.records.values()),
        }
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")


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
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise OutputError(f"{self.path.parent}: another vidtag run is writing here ({holder}); wait for it or use another --output")
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        try:
            self.path.unlink()
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
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir = prepare_output_dir(out_dir)
    key = options_key(options)
    summary = BatchSummary()

    def finish(task: VideoTask, record: dict) -> None:
        manifest.put(_finish(record))
        summary.records.append(record)
        if on_event:
            on_event("end", task, record)

    def settle(pending) -> None:
        """Wait for a background write and record its outcome."""
        task, record, future = pending
        try:
            record.update(future.result())
            record["status"] = "done"
        except BaseException as err:  # noqa: BLE001 - recorded, never lost
            record.update(status="failed", error=_error_line(err, task.path))
        finish(task, record)

    with OutputLock(out_dir), ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="vidtag-write", initializer=_lower_thread_priority
    ) as writer:
        manifest = Manifest(out_dir)
        pending = None
        try:
            for task in tasks:
                record = _base_record(task, key, options)
                if on_event:
                    on_event("start", task, None)
                future = None
                try:
                    record["size"], record["sha256_first_mib"] = fingerprint(task.path)
                except OSError as err:
                    record.update(status="failed", error=f"{task.path}: {_os_cause(err)}")
                if record["status"] == "pending":
                    previous = manifest.get(task.path)
                    if not overwrite and _still_done(previous, record, out_dir):
                        record.update(status="skipped", outputs=previous["outputs"], frames=previous.get("frames"),
                                      seconds=previous.get("seconds"), fps=previous.get("fps"))
                    else:
                        t0 = time.perf_counter()
                        try:
                            result = detect(task)
                            future = writer.submit(write, task, result)
                        except KeyboardInterrupt:
                            record.update(status="failed", error=f"{task.path}: interrupted",
                                          seconds=round(time.perf_counter() - t0, 3))
                            if pending is not None:
                                settle(pending)
                                pending = None
                            finish(task, record)
                            raise
                        except Exception as err:  # noqa: BLE001 - one bad video never stops the batch
                            record.update(status="failed", error=_error_line(err, task.path))
                if pending is not None:
                    settle(pending)
                    pending = None
                if future is not None:
                    pending = (task, record, future)
                else:
                    finish(task, record)
        finally:
            if pending is not None:
                settle(pending)
    return summary


def _lower_thread_priority() -> None:
    """Give the writer thread (and the encoder threads it starts) a lower CPU
    priority, so writing fills the gaps inference leaves instead of slowing it.
    Linux nice values are per thread; elsewhere this does nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _error_line(err: BaseException, path: Path) -> str:
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
