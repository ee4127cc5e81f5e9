"""The output folder a run writes: checked writable, locked against a second run,
cleared of what a killed run left half-written.

The lock is ``.vidtag.lock`` in the folder (an ``flock`` on it; the file holds
the holder's pid for the message a second run shows).  Half-written means the
staging folders (outputs not yet moved into place) and the temporary files of
the ledger and of the write probe: no reader ever took them for an output.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from vidtag.batch.ledger import MANIFEST_NAME
from vidtag.errors import OutputError
from vidtag.pipeline import STAGING_DIR

LOCK_NAME = ".vidtag.lock"


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
