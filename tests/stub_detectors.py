"""Runners for worker processes and Ray tasks in tests: the model-free
detector of conftest, and one that fails on purpose on "poison" clips.

Workers build their runner from a picklable factory (``make_runner`` of
:func:`vidtag.api.annotate`); these are such factories.  A poison clip is one
whose frames are :data:`POISON_WIDTH` pixels wide, so the detector knows it
from its frames alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import BrightBoxDetector, FakeManifest

POISON_WIDTH = 80


def fake_runner(settings):
    """A runner around the model-free BrightBoxDetector."""
    from vidtag.api import Runner

    return Runner.with_detector(BrightBoxDetector(), FakeManifest(), settings)


class FaultyDetector(BrightBoxDetector):
    """BrightBoxDetector that fails on poison clips.

    Each attempt on a poison clip appends a line to ``attempts``; then
    ``mode`` ``"raise"`` raises RuntimeError, ``"die"`` ends the worker
    process at once (as a crash or the OOM killer would), ``"die-once"``
    does so only on the first attempt.
    """

    def __init__(self, mode: str, attempts: str):
        self.mode = mode
        self.attempts = Path(attempts)

    def run(self, chunks):
        for k, chunk in enumerate(chunks):
            if k == 0 and chunk.frames.shape[2] == POISON_WIDTH:  # one attempt per video, whatever the batch size
                with open(self.attempts, "a") as f:
                    f.write(f"{os.getpid()}\n")
                tries = len(self.attempts.read_text().splitlines())
                if self.mode == "raise":
                    raise RuntimeError("poison clip")
                if self.mode == "die" or (self.mode == "die-once" and tries == 1):
                    os._exit(3)
            yield from super().run([chunk])


def faulty_runner(settings, mode: str, attempts: str):
    """A runner around FaultyDetector; bind ``mode`` and ``attempts`` with functools.partial."""
    from vidtag.api import Runner

    return Runner.with_detector(FaultyDetector(mode, attempts), FakeManifest(), settings)
