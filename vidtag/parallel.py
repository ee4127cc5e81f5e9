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
        job: the :class:`vidtag.api.VideoJob` every video runs.
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

    def run(self, items: Sequence[tuple[VideoTask, RunRecord]]) -> Iterator[tuple[VideoTask, RunRecord]]:
        """Yield ``(task, record)`` as the workers finish; see the Executor protocol."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        if not items:
            return
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(self.workers, len(items)), mp_context=context,
                                   initializer=_start_worker, initargs=(self.threads,))
        log.info("%d videos on %d worker processes, %d torch thread(s) each", len(items),
                 min(self.workers, len(items)), self.threads)
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
            pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(threads: int) -> None:
    """Worker process set-up: its share of the cores for torch."""
    import torch

    torch.set_num_threads(threads)
