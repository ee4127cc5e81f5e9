"""Running many videos: one by one in this process, or on an executor, the ledger kept true.

Two schedulers share the lock, the ledger and the skip check:
:func:`run_batch` detects the videos one by one in this process, and
:func:`run_batch_parallel` hands them to an executor (worker processes, a Ray
cluster) that runs :func:`process_video` for each and returns its record.
Only the scheduler writes the ledger.  A video already done with the same
options is skipped; one bad video never stops the batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from vidtag.batch.discovery import VideoTask
from vidtag.batch.ledger import Manifest, RunRecord, fingerprint, options_key, utc_now
from vidtag.batch.output_dir import OutputLock, prepare_output_dir, remove_leftovers
from vidtag.errors import VidtagError

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """Counts of a batch run and the records of this run's videos."""

    records: list[RunRecord] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def ok(self) -> bool:
        return all(r["status"] in ("done", "skipped") for r in self.records)


EventFn = Callable[[str, VideoTask, RunRecord | None], None]
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

    def finish(task: VideoTask, record: RunRecord) -> None:
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
    record: RunRecord,
    detect: Callable[[VideoTask], object],
    write: Callable[[VideoTask, object], dict],
    *,
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> RunRecord:
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

    def run(self, items: Sequence[tuple[VideoTask, RunRecord]]) -> Iterator[tuple[VideoTask, RunRecord]]: ...


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
                    overwrite: bool) -> RunRecord:
    """A new record for ``task``: ``pending`` (to do), ``skipped`` (done before)
    or ``failed`` (the input cannot be read)."""
    record = _new_record(task, key, options)
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


def _finish_record(manifest: Manifest, summary: BatchSummary, task: VideoTask, record: RunRecord,
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


def _remove_stale_outputs(previous: RunRecord | None, record: RunRecord, out_dir: Path) -> None:
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


def _new_record(task: VideoTask, key: str, options: dict) -> RunRecord:
    """``task``'s record before anything is known of it: ``pending``."""
    return RunRecord(
        path=os.path.abspath(task.path),
        stem=task.stem,
        output_name=task.output_name,
        size=None,
        sha256_first_mib=None,
        status="pending",
        error=None,
        outputs={},
        frames=None,
        seconds=None,
        fps=None,
        options_key=key,
        options=options,
        finished=None,
    )


def _finish(record: RunRecord) -> RunRecord:
    record["finished"] = utc_now()
    return record


def _still_done(previous: RunRecord | None, record: RunRecord, out_dir: Path) -> bool:
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

