"""Run an iterator ahead of its consumer in a background thread.

Decoding (decord, PyAV) and encoding release the GIL inside FFmpeg, so a
thread is enough to overlap them with inference.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _DONE = "item", "error", "done"
_POLL_S = 0.05


class Prefetch(Iterator[T]):
    """An iterator whose items are produced ``depth`` ahead in a daemon thread.

    Use it as an iterator, ideally inside ``with``::

        with prefetch(iter_chunks(path), depth=2, name="decode") as chunks:
            for chunk in chunks:
                ...

    * The producer starts at construction and blocks when ``depth`` items
      wait, so memory is bounded by ``depth`` items (plus the one being made).
    * An exception raised by the producer is re-raised, with its original
      type and traceback, by the ``next()`` that reaches it; the items before
      it are delivered first.
    * :meth:`close` (called by ``with``, by ``del`` and when iteration ends)
      stops the producer: it finishes the item it is computing, ``close()``s
      the source iterator in its own thread (so a generator's ``finally``
      runs), and exits.  ``close`` waits for that up to ``timeout`` seconds.
    """

    def __init__(self, iterable: Iterable[T], depth: int = 2, name: str = "prefetch", timeout: float = 30.0):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._timeout = timeout
        # The thread gets the queue and the event, not ``self``: an abandoned
        # Prefetch is then garbage-collected and its __del__ stops the thread.
        self._thread = threading.Thread(
            target=_produce, args=(iter(iterable), self._queue, self._stop), name=name, daemon=True
        )
        self._thread.start()

    # consumer side -----------------------------------------------------------
    def __iter__(self) -> "Prefetch[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        try:
            kind, payload = self._queue.get()
        except BaseException:  # KeyboardInterrupt while waiting
            self.close()
            raise
        if kind == _ITEM:
            return payload
        self.close()
        if kind == _ERROR:
            raise payload
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and wait for its thread to end (idempotent)."""
        self._finished = True
        self._stop.set()
        while True:  # free a producer blocked on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(self._timeout)

    @property
    def alive(self) -> bool:
        """True while the producer thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:
            pass


def _put(q: queue.Queue, stop: threading.Event, kind: str, payload) -> bool:
    """Queue an entry unless stopped; True when it was queued."""
    while not stop.is_set():
        try:
            q.put((kind, payload), timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator, q: queue.Queue, stop: threading.Event) -> None:
    """The producer thread: run ``source`` into ``q`` until done or stopped."""
    try:
        for item in source:
            if not _put(q, stop, _ITEM, item):
                return
        _put(q, stop, _DONE, None)
    except BaseException as err:  # handed to the consumer, not lost in the thread
        _put(q, stop, _ERROR, err)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the consumer has already stopped listening
                pass


def prefetch(iterable: Iterable[T], depth: int = 2, name: str = "prefetch") -> Prefetch[T]:
    """Iterate ``iterable`` in a background daemon thread, ``depth`` items ahead.

    Args:
        iterable: any iterable; generators are closed in the producer thread
            when the consumer stops early.
        depth: items produced ahead (bounded queue size).
        name: the thread's name (shows in ``threading.enumerate()`` and in
            tracebacks).

    Returns:
        A :class:`Prefetch` iterator and context manager.
    """
    return Prefetch(iterable, depth=depth, name=name)
