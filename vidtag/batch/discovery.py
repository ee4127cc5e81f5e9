"""Finding the input videos: files and folders -> tasks whose outputs never collide.

A task names one video and where its outputs go under the output folder
(the input's folder tree mirrored).  What vidtag itself wrote is never taken
for an input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vidtag.batch.ledger import listed_outputs
from vidtag.errors import VidtagError
from vidtag.pipeline import STAGING_DIR

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv".split()
)


@dataclass(frozen=True)
class VideoTask:
    """One input video and where its outputs go.

    Attributes:
        path: the video file.
        stem: its outputs are ``<stem><suffix>`` (the file name without its
            extension; also the video's name inside COCO and MOT JSON files).
        subdir: the folder under the output folder they are written in, as a
            relative POSIX path ("" for the output folder itself): the input's
            folder tree mirrored (see :func:`find_videos`).
    """

    path: Path
    stem: str
    subdir: str = ""

    @property
    def output_name(self) -> str:
        """``subdir/stem`` (or ``stem``): the outputs' path under the output folder, suffix left out."""
        return f"{self.subdir}/{self.stem}" if self.subdir else self.stem


ANNOTATED_SUFFIX = ".annotated.mp4"
"""The annotated video's suffix (vidtag.formats): a file named so is vidtag's output, never an input."""


def find_videos(sources: Sequence[str | Path], recursive: bool = False, output: str | Path | None = None) -> list[VideoTask]:
    """Expand files and folders into video tasks whose outputs never collide.

    A file named on the command line is always taken (so a bad file gets its
    own error) and its outputs go straight into the output folder.  A folder
    ``F`` contributes the files whose suffix is a known video suffix (searched
    recursively with ``recursive``); the outputs of ``F/a/b.mp4`` go into
    ``<output>/a/`` (its path relative to ``F``, as the output spec says).  What vidtag
    wrote is never taken from a folder: files inside ``output``, annotated
    videos (``*.annotated.mp4``), staging folders, and files that a
    ``vidtag-run.json`` beside or above them lists as outputs.

    Output names depend only on the input, never on the rest of the batch.

    Raises:
        VidtagError: a folder holds no video files.
        ValueError: two inputs would write the same outputs (e.g. ``x.mp4`` and
            ``x.mkv`` in one folder); the message names both.
    """
    out_root = Path(os.path.abspath(output)) if output is not None else None
    listed: dict[Path, frozenset[str]] = {}  # folder -> absolute paths its vidtag-run.json lists as outputs
    tasks: list[VideoTask] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            pattern = source.rglob("*") if recursive else source.iterdir()
            found = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            found = [p for p in found if not _is_output(p, source, out_root, listed)]
            if not found:
                hint = "" if recursive else " (use --recursive to search subfolders)"
                raise VidtagError(f"{source}: no video files found{hint}")
            for p in found:
                subdir = p.relative_to(source).parent.as_posix()
                tasks.append(VideoTask(p, p.stem, "" if subdir == "." else subdir))
        else:
            tasks.append(VideoTask(source, source.stem))
    unique: dict[str, VideoTask] = {}
    for task in tasks:
        unique.setdefault(os.path.abspath(task.path), task)
    owners: dict[str, Path] = {}
    for task in unique.values():
        other = owners.setdefault(task.output_name, task.path)
        if other != task.path:
            raise ValueError(f"{other} and {task.path} would both write {task.output_name}.*: "
                             "run them with different -o folders")
    return list(unique.values())


OUTPUT_MARKERS = frozenset({STAGING_DIR})


def _is_output(path: Path, source: Path, out_root: Path | None, listed: dict[Path, frozenset[str]]) -> bool:
    """Whether ``path`` (found under folder ``source``) is something vidtag wrote."""
    absolute = Path(os.path.abspath(path))
    if path.name.lower().endswith(ANNOTATED_SUFFIX) or not OUTPUT_MARKERS.isdisjoint(path.parts):
        return True
    if out_root is not None and (absolute == out_root or out_root in absolute.parents):
        return True
    top = Path(os.path.abspath(source))
    for folder in (absolute.parent, *absolute.parent.parents):
        if folder not in listed:
            listed[folder] = listed_outputs(folder)
        if str(absolute) in listed[folder]:
            return True
        if folder == top:
            break
    return False
