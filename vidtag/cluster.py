"""Run a batch's videos on a Ray cluster (``vidtag detect DIR --ray [ADDRESS]``).

One Ray task per video.  Each task runs :meth:`vidtag.api.VideoJob.process`
(the same detect-and-write code as a local run) and returns the video's
manifest record; the driver keeps the output lock and is the only writer of
``vidtag-run.json`` (:func:`vidtag.batch.run_batch_parallel`).

* Resources: a task asks for one GPU when the cluster has GPUs, else one CPU.
* Shared file system: every node must see the input videos and the output
  folder at the same absolute paths (an NFS or similar mount); tasks get
  absolute paths and write their outputs atomically (staging folder, rename).
* Failures: an input or output problem (a :class:`~vidtag.errors.VidtagError`)
  is a failed record at once, as locally.  Any other exception in a task, and
  a worker or node that dies, is retried by Ray up to ``retries`` times; then
  the video is recorded as failed with the cause and the number of tries.
  Every video comes back: none is silently lost.

Ray is an optional dependency (``pip install 'vidtag[ray]'``), imported only
here and only when a run asks for it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from vidtag.batch import RunRecord, VideoTask, error_line
from vidtag.errors import VidtagError

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
"""Retries of a task after an unexpected exception or a dead worker (3 tries in all)."""

INSTALL_HINT = "pip install 'vidtag[ray]'"


class ClusterError(VidtagError):
    """Ray is missing or the cluster cannot be reached."""


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver sees of the cluster it is connected to."""

    address: str
    nodes: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        return (f"Ray cluster {self.address}: {self.nodes} node(s), {self.cpus:g} CPU(s), {self.gpus:g} GPU(s); "
                f"one task per video on {'1 GPU' if self.gpus else '1 CPU'}")


def import_ray():
    """The ``ray`` module, or a ClusterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str = "") -> tuple[ClusterInfo, bool]:
    """Connect this process to a Ray cluster (reusing a connection already made).

    Args:
        address: ``""``: as ``ray.init()``: the cluster named by
            ``RAY_ADDRESS`` or the last one started on this machine, else a
            new local one; ``"auto"``: an existing cluster on this machine
            (error if none); ``"HOST:PORT"``: the head node's GCS address
            (port 6379 by default); ``"ray://HOST:10001"``: Ray Client;
            ``"local"``: a new single-machine cluster.

    Returns:
        (cluster info, whether this call connected: then call ``ray.shutdown()`` when done).

    Raises:
        ClusterError: Ray is not installed or the cluster cannot be reached.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            where = address or "(ray.init default)"
            raise ClusterError(f"cannot connect to the Ray cluster {where}: {_one_line(err)}") from None
        started = True
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    info = ClusterInfo(address=address or "(default)", nodes=nodes, cpus=float(resources.get("CPU", 0)),
                       gpus=float(resources.get("GPU", 0)))
    return info, started


class RayExecutor:
    """An :class:`vidtag.batch.Executor` that runs each video as a Ray task.

    Use as a context manager: it connects on entry and, if it made the
    connection, disconnects on exit (a cluster it started goes away with it).

    Args:
        job: the :class:`vidtag.api.VideoJob` every video runs.
        address: see :func:`connect`.
        retries: Ray retries of a task (see module doc).
    """

    def __init__(self, job, address: str = "", retries: int = DEFAULT_RETRIES):
        self.job = job
        self.address = address
        self.retries = retries
        self.info: ClusterInfo | None = None
        self._started = False

    def __enter__(self) -> "RayExecutor":
        self.info, self._started = connect(self.address)
        log.info("%s", self.info.describe())
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import_ray().shutdown()

    def run(self, items: Sequence[tuple[VideoTask, RunRecord]]) -> Iterator[tuple[VideoTask, RunRecord]]:
        """Submit every video, yield ``(task, record)`` as tasks finish; cancel the rest when closed."""
        ray = import_ray()
        if not items:
            return
        if self.info is None:
            raise RuntimeError("RayExecutor.run outside its `with` block")
        resources = {"num_gpus": 1} if self.info.gpus > 0 else {"num_cpus": 1}
        remote = ray.remote(_run_task).options(max_retries=self.retries, retry_exceptions=True, **resources)
        job = _absolute(self.job)
        refs = {}
        for task, record in items:
            shipped = VideoTask(Path(os.path.abspath(task.path)), task.stem, task.subdir)
            refs[remote.remote(job, shipped, record)] = (task, record)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    task, record = refs[ref]
                    yield task, self._result(ray, ref, task, record)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _result(self, ray, ref, task: VideoTask, record: RunRecord) -> RunRecord:
        """The task's record, or a failed record saying why it failed for good."""
        tries = self.retries + 1
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            record.update(status="failed", error=f"{error_line(cause, task.path)} (failed {tries} times on the Ray cluster)")
        except ray.exceptions.RayError as err:
            record.update(status="failed", error=f"{task.path}: the Ray task failed {tries} times "
                                                 f"({type(err).__name__}: {_one_line(err)})")
        return record


def _run_task(job, task: VideoTask, record: RunRecord) -> RunRecord:
    """The Ray task: one video, start to end, in a worker of the cluster.

    Input and output errors come back as a failed record; anything else
    raises, so Ray retries it.
    """
    return job.process(task, record, catch=VidtagError)


def _absolute(job):
    """``job`` with an absolute output folder (a worker's working folder is not the driver's)."""
    from dataclasses import replace

    return replace(job, output=Path(os.path.abspath(job.output)))


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
