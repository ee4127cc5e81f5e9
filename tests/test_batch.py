"""Batch runs: manifest, resume, skip, isolation, locking (model-free detector)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from vidtag.api import annotate
from vidtag.batch import MANIFEST_NAME, OutputLock, find_videos
from vidtag.errors import OutputError, VidtagError

FORMATS = ("coco", "mot", "mot-json", "csv")


def manifest(out):
    return {os.path.basename(r["path"]): r for r in json.loads((out / MANIFEST_NAME).read_text())["videos"]}


def test_batch_writes_outputs_and_manifest(tmp_path, clip, fake_runner):
    out = tmp_path / "out"
    summary = annotate([clip], out, FORMATS, runner=fake_runner)
    assert summary.ok and summary.count("done") == 1
    record = manifest(out)["clip.mp4"]
    assert record["status"] == "done" and record["frames"] == 12 and record["error"] is None
    assert record["size"] == clip.stat().st_size and len(record["sha256_first_mib"]) == 64
    for fmt, out_file in record["outputs"].items():
        assert (out / out_file["file"]).stat().st_size == out_file["bytes"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["clip.coco.json", "clip.coco-results.json", "clip.mot.txt", "clip.mot.json", "clip.tracks.csv", MANIFEST_NAME])


def test_rerun_skips_done_and_redoes_changed(tmp_path, clip, fake_runner):
    out = tmp_path / "out"
    annotate([clip], out, FORMATS, runner=fake_runner)
    first = manifest(out)["clip.mp4"]
    summary = annotate([clip], out, FORMATS, runner=fake_runner)
    assert summary.count("skipped") == 1
    assert manifest(out)["clip.mp4"]["outputs"] == first["outputs"]
    assert annotate([clip], out, FORMATS, runner=fake_runner, overwrite=True).count("done") == 1
    assert annotate([clip], out, ("coco",), runner=fake_runner).count("done") == 1  # other options: redone
    (out / "clip.coco.json").unlink()
    assert annotate([clip], out, ("coco",), runner=fake_runner).count("done") == 1  # output gone: redone


def test_one_bad_file_never_stops_the_batch(tmp_path, clip, fake_runner):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out"
    summary = annotate([bad, missing, clip], out, FORMATS, runner=fake_runner)
    statuses = {os.path.basename(r["path"]): r["status"] for r in summary.records}
    assert statuses == {"bad.mp4": "failed", "missing.mp4": "failed", "clip.mp4": "done"}
    records = manifest(out)
    assert str(bad) in records["bad.mp4"]["error"] and "\n" not in records["bad.mp4"]["error"]
    assert "not found" in records["missing.mp4"]["error"]
    assert not any(p.name.startswith("bad.") for p in out.iterdir())
    # the failed one is redone on a rerun, the done one skipped
    summary = annotate([bad, clip], out, FORMATS, runner=fake_runner)
    assert [r["status"] for r in summary.records] == ["failed", "skipped"]


def test_interrupt_leaves_no_partial_output_and_true_manifest(tmp_path, clip, fake_runner):
    second = tmp_path / "second.mp4"
    shutil.copy(clip, second)
    out = tmp_path / "out"

    class Interrupt:
        calls = 0

        def __call__(self, stage, done, total):
            if os.path.basename(str(self.current)) == "second.mp4" and done >= 4:
                raise KeyboardInterrupt

    interrupt = Interrupt()

    def on_event(kind, task, record):
        interrupt.current = task.path

    with pytest.raises(KeyboardInterrupt):
        annotate([clip, second], out, FORMATS, runner=fake_runner, on_event=on_event, on_progress=interrupt)
    records = manifest(out)
    assert records["clip.mp4"]["status"] == "done"
    assert records["second.mp4"]["status"] == "failed" and "interrupted" in records["second.mp4"]["error"]
    assert not any(p.name.startswith("second.") for p in out.iterdir())
    assert not (out / ".vidtag-staging").exists()
    summary = annotate([clip, second], out, FORMATS, runner=fake_runner)
    assert [r["status"] for r in summary.records] == ["skipped", "done"]


def test_same_stems_get_distinct_outputs(tmp_path, clip, fake_runner):
    """The input tree is mirrored under the output folder: names depend only on the input."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(clip, tmp_path / "a" / "x.mp4")
    shutil.copy(clip, tmp_path / "b" / "x.mp4")
    tasks = find_videos([tmp_path], recursive=True)
    assert sorted(t.output_name for t in tasks) == ["a/x", "b/x", "clip"]
    assert {t.stem for t in tasks} == {"x", "clip"}
    out = tmp_path.parent / f"{tmp_path.name}-out"
    summary = annotate([tmp_path], out, ("csv",), runner=fake_runner, recursive=True)
    assert summary.count("done") == 3
    assert (out / "a" / "x.tracks.csv").is_file() and (out / "b" / "x.tracks.csv").is_file()
    assert (out / "clip.tracks.csv").is_file()


def test_two_inputs_with_one_output_name_are_refused(tmp_path, clip):
    shutil.copy(clip, tmp_path / "clip.mkv")
    with pytest.raises(ValueError, match="would both write"):
        find_videos([tmp_path])


def test_folder_search(tmp_path, clip):
    (tmp_path / "sub").mkdir()
    shutil.copy(clip, tmp_path / "sub" / "deep.MOV")
    (tmp_path / "notes.txt").write_text("x")
    assert [t.path.name for t in find_videos([tmp_path])] == ["clip.mp4"]
    assert sorted(t.path.name for t in find_videos([tmp_path], recursive=True)) == ["clip.mp4", "deep.MOV"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VidtagError, match="no video files"):
        find_videos([empty])


def test_lock_refuses_second_run(tmp_path, clip, fake_runner):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        with pytest.raises(OutputError, match="another vidtag run"):
            annotate([clip], out, FORMATS, runner=fake_runner)
    assert annotate([clip], out, FORMATS, runner=fake_runner).ok


def test_unreadable_manifest_is_kept_aside(tmp_path, clip, fake_runner):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{ truncated")
    assert annotate([clip], out, FORMATS, runner=fake_runner).ok
    assert manifest(out)["clip.mp4"]["status"] == "done"
    assert any(p.name.startswith(MANIFEST_NAME + ".unreadable-") for p in out.iterdir())
