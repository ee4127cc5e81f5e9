"""Bad input through the real `vidtag detect` command: one clear line, right exit code, nothing lost.

Each case is built by the test.  The real NanoDet-g runs at a small input
size so the whole file stays fast.
"""

from __future__ import annotations

import json

import av
import pytest
from click.testing import CliRunner

from tests.clips import make_bad_videos, make_clip
from vidtag.cli import main

FAST = ["--imgsz", "128", "--quiet"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert "Traceback" not in (result.stderr or ""), result.stderr
    return result


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    return make_bad_videos(tmp_path_factory.mktemp("bad"))


def test_a_missing_input_is_a_usage_error_before_anything_runs(tmp_path, bad_videos):
    path, _ = bad_videos["missing"]
    out = tmp_path / "out"
    result = run("detect", path, "-o", out, *FAST)
    assert result.exit_code == 2 and f"{path}: no such file or folder" in result.output + result.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["empty", "text", "audio only", "unfinished mp4", "truncated", "no frames"])
def test_each_bad_file_gives_one_clear_line(tmp_path, bad_videos, name):
    path, phrase = bad_videos[name]
    out = tmp_path / "out"
    result = run("detect", path, "-o", out, *FAST)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1 and phrase in lines[0], result.stderr
    record = json.loads((out / "vidtag-run.json").read_text())["videos"][0]
    assert record["status"] == "failed" and phrase in record["error"] and "\n" not in record["error"]
    assert sorted(p.name for p in out.iterdir()) == ["vidtag-run.json"]  # no partial outputs


def test_bad_files_do_not_stop_good_ones(tmp_path, bad_videos):
    good = make_clip(tmp_path / "good.mp4", 8, 96, 64, 10)
    bad = [bad_videos[n][0] for n in ("text", "truncated", "empty")]
    out = tmp_path / "out"
    result = run("detect", *bad, good, "-o", out, "--format", "coco", *FAST)
    assert result.exit_code == 1
    records = {r["stem"]: r["status"] for r in json.loads((out / "vidtag-run.json").read_text())["videos"]}
    assert records == {"text": "failed", "cut": "failed", "empty": "failed", "good": "done"}
    assert (out / "good.coco.json").is_file()


def test_one_frame_video(tmp_path):
    video = make_clip(tmp_path / "one.mp4", 1, 96, 64, 10)
    out = tmp_path / "out"
    assert run("detect", video, "-o", out, *FAST).exit_code == 0
    coco = json.loads((out / "one.coco.json").read_text())
    assert len(coco["images"]) == 1 and coco["videos"][0]["num_frames"] == 1
    with av.open(str(out / "one.annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 1


def test_odd_width_and_height(tmp_path):
    video = make_clip(tmp_path / "odd.mp4", 6, 97, 63, 10)
    out = tmp_path / "out"
    assert run("detect", video, "-o", out, *FAST).exit_code == 0
    coco = json.loads((out / "odd.coco.json").read_text())
    assert (coco["videos"][0]["width"], coco["videos"][0]["height"]) == (97, 63)
    with av.open(str(out / "odd.annotated.mp4")) as c:
        stream = c.streams.video[0]
        # yuv420p needs even sizes: the encoder repeats the last column/row (see vidtag/io/encode.py)
        assert (stream.width, stream.height) == (98, 64)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_very_large_resolution(tmp_path):
    video = make_clip(tmp_path / "huge.mp4", 2, 4096, 3072, 5)
    out = tmp_path / "out"
    result = run("detect", video, "-o", out, "--format", "coco", "--format", "csv", *FAST)
    assert result.exit_code == 0, result.stderr
    coco = json.loads((out / "huge.coco.json").read_text())
    assert (coco["videos"][0]["width"], coco["videos"][0]["height"]) == (4096, 3072)


def test_unwritable_output_folder(tmp_path):
    video = make_clip(tmp_path / "v.mp4", 3, 64, 48, 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out"  # a folder under a regular file cannot exist, even for root
    result = run("detect", video, "-o", out, *FAST)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "cannot write output folder" in lines[0], result.stderr


def test_folder_with_no_videos(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    result = run("detect", tmp_path, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert f"{tmp_path}: no video files found" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    video = make_clip(tmp_path / "v.mp4", 3, 64, 48, 10)
    assert run("detect", video, "--imgsz", "100").exit_code == 2
    assert run("detect", video, "--classes", "person,unicorn").exit_code == 2
    assert run("detect", video, "--format", "gif").exit_code == 2
    assert run("detect", video, "--device", "tpu").exit_code == 2


def test_brackets_in_a_name_are_shown_as_they_are(tmp_path):
    """Rich markup must not eat ``[x]`` from a path or an error (it did: ``[ray]`` vanished)."""
    bad = tmp_path / "bad[x].mp4"
    bad.write_text("not a video")
    result = run("detect", bad, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert f"failed: {bad}: not a video" in result.stderr, result.stderr
