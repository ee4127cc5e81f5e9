"""Run a batch's videos in local worker processes (``vidtag detect --workers N``).

Each worker process builds its own runner once and then runs
:meth:`vidtag.api.VideoJob.process` for one video after another, writing the
outputs into the output folder the same atomic way a sequential run does;
the driver (:func:`vidtag.batch.run_batch_parallel`) keeps the lock and the
manifest.  Workers are started with ``spawn`` (a fork of a process that has
started torch's threads can deadlock) and get an equal share of the cores for
torch's threads.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence

from vidtag.batch import RunRecord, VideoTask, error_line

log = logging.getLogger(__name__)


class ProcessExecutor:
    """An :class:`vidtag.batch.Executor` over ``workers`` local processes.

    Args:
        job: the :class:`vidtag.api.VideoJob` every video runs (may be set
            after :meth:`start`, before :meth:`run`).
        workers: worker processes (at least 2 to be worth it).
        threads: torch threads per worker; default: the cores divided
            evenly, at least 1.
    """

    def __init__(self, job, workers: int, threads: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.job = job
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._pool = None

    def start(self, videos: int | None = None) -> "ProcessExecutor":
        """Start the worker processes now (at most ``videos`` of them), so that they
        import torch and vidtag while the caller goes on (e.g. checks the settings
        by building the driver's runner); :meth:`run` then uses them."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            size = self.workers if videos is None else max(1, min(self.workers, videos))
            self._pool = ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.threads,))
            for _ in range(size):
                self._pool.submit(int)  # a submit that finds no idle worker starts one
        return self

    def call(self, fn, *args):
        """``fn(*args)`` in one of the worker processes (started if need be); its result.

        Raises:
            what ``fn`` raised there.
        """
        return self.start()._pool.submit(fn, *args).result()

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes (pending videos are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def run(self, items: Sequence[tuple[VideoTask, RunRecord]]) -> Iterator[tuple[VideoTask, RunRecord]]:
        """Yield ``(task, record)`` as the workers finish; see the Executor protocol."""
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        if not items:
            self.close()
            return
        pool = self.start(len(items))._pool
        log.info("%d videos on %d worker processes, %d torch thread(s) each", len(items),
                 pool._max_workers, self.threads)
        try:
            futures = {pool.submit(self.job.process, task, record): (task, record) for task, record in items}
            for future in as_completed(futures):
                task, record = futures[future]
                try:
                    record = future.result()
                except BrokenProcessPool:
                    record.update(status="failed", error=f"{task.path}: a worker process died (killed, or out of memory?)")
                except Exception as err:  # noqa: BLE001 - recorded like a sequential failure
                    record.update(status="failed", error=error_line(err, task.path))
                yield task, record
        finally:
            self.close()


def _start_worker(threads: int) -> None:
    """Worker process set-up: its share of the cores for torch, and the imports every video needs."""
    import torch

    torch.set_num_threads(threads)
    import vidtag.formats  # noqa: F401  (the writers, models and pipeline, before the first video)
    import vidtag.models.build  # noqa: F401
    import vidtag.pipeline  # noqa: F401
