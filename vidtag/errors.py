"""Errors that carry a user-facing, one-line message."""

from __future__ import annotations

from pathlib import Path


class VidtagError(Exception):
    """Base class: the message is fit to show a user as one line."""


class VideoError(VidtagError):
    """A video cannot be read or written.

    ``str(err)`` is ``"<path>: <cause>"``, one line.
    """

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = " ".join(str(cause).split())
        super().__init__(f"{self.path}: {self.cause}")


class WeightsError(VidtagError):
    """Weights are missing, corrupt (sha256 mismatch) or do not fit the model."""


class OutputError(VidtagError):
    """The output folder cannot be created or written."""
