"""Checks that a run's output folder is complete and true, for the fault tests.

:func:`check_record` parses every output file a manifest record lists (COCO
JSON, MOT txt, MOT JSON, CSV, MP4 decoded to the end) and checks its size
and frame count against the record; :func:`stray_files` lists anything in
the folder that is neither an output nor the manifest (temporary files,
staging folders, a lock left behind).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vidtag.batch import MANIFEST_NAME
from vidtag.formats import SUFFIXES


def manifest_records(out: Path) -> dict[str, dict]:
    """The manifest's records by stem (the file must parse)."""
    data = json.loads((out / MANIFEST_NAME).read_text())
    return {r["stem"]: r for r in data["videos"]}


def check_record(out: Path, record: dict) -> None:
    """Assert that a ``done``/``skipped`` record's outputs exist, match and parse."""
    assert record["status"] in ("done", "skipped"), record
    frames = record["frames"]
    assert record["outputs"], record
    for fmt, entry in record["outputs"].items():
        path = out / entry["file"]
        assert path.is_file() and path.stat().st_size == entry["bytes"], (path, entry)
        check_file(fmt, path, frames)


def check_file(fmt: str, path: Path, frames: int) -> None:
    """Assert that one output file parses and describes ``frames`` frames."""
    if fmt == "coco":
        data = json.loads(path.read_text())
        assert len(data["images"]) == frames and data["videos"][0]["num_frames"] == frames
        ids = {im["id"] for im in data["images"]}
        assert all(a["image_id"] in ids and len(a["bbox"]) == 4 for a in data["annotations"])
    elif fmt == "mot":
        for line in path.read_text().splitlines():
            fields = line.split(",")
            assert len(fields) == 10, line
            frame, track = int(fields[0]), int(fields[1])
            assert 1 <= frame <= frames and track >= 1, line
            [float(v) for v in fields[2:7]]
    elif fmt == "coco-results":
        rows = json.loads(path.read_text())
        assert isinstance(rows, list) and all(1 <= r["image_id"] <= frames and len(r["bbox"]) == 4 for r in rows)
    elif fmt == "mot-json":
        rows = json.loads(path.read_text())
        assert isinstance(rows, list) and all(0 <= r["frame_id"] < frames for r in rows if "frame_id" in r)
    elif fmt == "csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert all(0 <= int(r["frame"]) < frames and float(r["x2"]) >= float(r["x1"]) for r in rows)
    elif fmt == "mp4":
        import av

        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == frames
    else:
        raise AssertionError(f"unknown format {fmt}")


def stray_files(out: Path) -> list[str]:
    """Paths under ``out`` (files, and empty folders) that are neither a recorded output nor the manifest."""
    expected = {MANIFEST_NAME}
    for record in manifest_records(out).values():
        expected.update(entry["file"] for entry in record.get("outputs", {}).values())
    found = [p for p in out.rglob("*") if p.is_file() or (p.is_dir() and not any(p.iterdir()))]
    return sorted(p.relative_to(out).as_posix() for p in found if p.relative_to(out).as_posix() not in expected)


def output_names(stem: str, formats=SUFFIXES) -> set[str]:
    return {f"{stem}{SUFFIXES[f]}" for f in formats}
