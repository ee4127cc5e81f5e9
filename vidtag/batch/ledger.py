"""The run ledger: ``vidtag-run.json`` in the output folder, one record per input video.

The file is ``{"tool": "vidtag", "version", "created", "updated", "videos":
[RunRecord, ...]}`` (times UTC ISO 8601, to the second).  It is rewritten
atomically after every video, so after a crash or Ctrl-C it tells the truth
about what is complete; a rerun reads it to skip what is done.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal, Sequence, TypedDict

from vidtag.errors import OutputError

log = logging.getLogger(__name__)

MANIFEST_NAME = "vidtag-run.json"

Status = Literal["pending", "done", "skipped", "failed"]
"""A record's status: ``pending`` while its video is to run, then one of the other three."""


class OutputFile(TypedDict):
    """One output file of a video."""

    file: str  # its path under the output folder (POSIX)
    bytes: int  # its size


class _RunRecordFields(TypedDict):
    path: str  # the input, absolute
    stem: str  # see VideoTask
    output_name: str  # see VideoTask
    size: int | None  # the input's bytes (None when it cannot be read)
    sha256_first_mib: str | None  # hex sha256 of the input's first MiB
    status: Status
    error: str | None  # one line naming the input, when failed
    outputs: dict[str, OutputFile]  # format -> file
    frames: int | None
    seconds: float | None  # detect + write
    fps: float | None  # frames / seconds
    options_key: str  # :func:`options_key` of ``options``
    options: dict  # the options that define the outputs
    finished: str | None  # when the record became final (UTC ISO 8601)


class RunRecord(_RunRecordFields, total=False):
    """One input video's record in the ledger: a plain dict, as it is in the JSON file, keys in this order.

    A video that was detected and written also has the fields its ``write``
    function returned beyond those above (vidtag's: ``width`` and ``height``
    of the video, ``detect_fps``), after ``finished``.
    """

    width: int
    height: int
    detect_fps: float


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
        self.records: dict[str, RunRecord] = {}
        self.created = utc_now()
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

    def get(self, path: Path) -> RunRecord | None:
        return self.records.get(os.path.abspath(path))

    def owner(self, output_name: str, path: Path) -> str | None:
        """The input, other than ``path``, whose finished results are ``output_name.*``; None if no other."""
        me = os.path.abspath(path)
        for r in self.records.values():
            if r["path"] != me and r.get("status") in ("done", "skipped") and r.get("output_name", r.get("stem")) == output_name:
                return r["path"]
        return None

    def put(self, record: RunRecord) -> None:
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
            "updated": utc_now(),
            "videos": list(self.records.values()),
        }
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
        except OSError as err:
            raise OutputError(f"{self.path}: cannot update the run manifest ({err.strerror or err}); "
                              "it still lists the videos finished before") from err


def listed_outputs(folder: Path) -> frozenset[str]:
    """Absolute paths of the outputs listed by ``folder/vidtag-run.json`` (none if absent or unreadable)."""
    try:
        records = json.loads((folder / MANIFEST_NAME).read_text())["videos"]
        return frozenset(str(folder / out["file"]) for r in records for out in r.get("outputs", {}).values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


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


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second: the ledger's timestamps."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
