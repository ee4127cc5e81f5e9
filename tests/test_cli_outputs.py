"""Where `vidtag detect` writes: names that depend only on the input, runs that never
replace another input's results, outputs that are never inputs, one set of outputs per video."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli import invoke
from tests.clips import make_clip

FAST = ["--imgsz", "128", "-q"]


def manifest(out):
    return {r["path"]: r for r in json.loads((out / "vidtag-run.json").read_text())["videos"]}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("src") / "clip.mp4", n_frames=6, width=96, height=64, fps=10)


def test_the_input_tree_is_mirrored_and_names_never_depend_on_the_batch(tmp_path, source):
    cams = tmp_path / "cams"
    for cam in ("camA", "camB"):
        (cams / cam).mkdir(parents=True)
        shutil.copy(source, cams / cam / "clip.mp4")
    out = tmp_path / "out"
    assert invoke("detect", cams, "-r", "-o", out, "--format", "coco", *FAST).exit_code == 0
    records = manifest(out)
    assert {r["output_name"] for r in records.values()} == {"camA/clip", "camB/clip"}
    assert all(r["status"] == "done" for r in records.values())
    for cam in ("camA", "camB"):
        coco = json.loads((out / cam / "clip.coco.json").read_text())
        assert [v["name"] for v in coco["videos"]] == ["clip"]  # the name eval matches ground truth by
    # one folder at a time into another output folder: the same names
    apart = tmp_path / "apart"
    assert invoke("detect", cams, "-r", "-o", apart, "--format", "coco", *FAST).exit_code == 0
    assert invoke("detect", cams / "camA", "-o", tmp_path / "a-only", "--format", "coco", *FAST).exit_code == 0
    assert (tmp_path / "a-only" / "clip.coco.json").is_file()
    # camB's folder into the output of camA's: refused for that video, camA's results kept
    before = (tmp_path / "a-only" / "clip.coco.json").read_bytes()
    second = invoke("detect", cams / "camB", "-o", tmp_path / "a-only", "--format", "coco", *FAST)
    assert second.exit_code == 1 and "hold the results of" in second.stderr
    assert (tmp_path / "a-only" / "clip.coco.json").read_bytes() == before


def test_a_second_input_never_replaces_the_results_of_another(tmp_path, source):
    for cam in ("camA", "camB"):
        (tmp_path / cam).mkdir()
        shutil.copy(source, tmp_path / cam / "clip.mp4")
    out = tmp_path / "out"
    assert invoke("detect", tmp_path / "camA" / "clip.mp4", "-o", out, "--format", "csv", *FAST).exit_code == 0
    before = (out / "clip.tracks.csv").stat().st_mtime_ns
    second = invoke("detect", tmp_path / "camB" / "clip.mp4", "-o", out, "--format", "csv", *FAST)
    assert second.exit_code == 1 and "hold the results of" in second.stderr and "camA" in second.stderr
    assert (out / "clip.tracks.csv").stat().st_mtime_ns == before
    records = manifest(out)
    assert records[str(tmp_path / "camA" / "clip.mp4")]["status"] == "done"
    assert records[str(tmp_path / "camB" / "clip.mp4")]["status"] == "failed"


def test_two_inputs_that_would_share_outputs_are_a_usage_error(tmp_path, source):
    shutil.copy(source, tmp_path / "x.mp4")
    shutil.copy(source, tmp_path / "x.mkv")
    result = invoke("detect", tmp_path, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "would both write" in result.output + result.stderr
    assert not (tmp_path / "out").exists()


def test_outputs_are_never_taken_as_inputs(tmp_path, source, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(source, videos / "one.mp4")
    inside = videos / "results"
    for _ in range(2):  # -o inside the input folder, twice
        assert invoke("detect", videos, "-r", "-o", inside, "--format", "mp4", *FAST).exit_code == 0
    assert sorted(p.relative_to(videos).as_posix() for p in videos.rglob("*.mp4")) == ["one.mp4", "results/one.annotated.mp4"]
    monkeypatch.chdir(videos)
    for _ in range(2):  # `vidtag detect . -r` twice, default output folder
        result = invoke("detect", ".", "-r", "--format", "mp4", *FAST)
        assert result.exit_code == 0, result.stderr
    assert sorted(p.relative_to(videos).as_posix() for p in videos.rglob("*.mp4")) == [
        "one.mp4", "results/one.annotated.mp4", "vidtag-out/one.annotated.mp4"]
    # an annotated video copied elsewhere is still recognised by its name
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(next(inside.rglob("one.annotated.mp4")), other / "one.annotated.mp4")
    shutil.copy(source, other / "two.mp4")
    assert invoke("detect", other, "-o", tmp_path / "o2", "--format", "csv", *FAST).exit_code == 0
    assert [r["stem"] for r in manifest(tmp_path / "o2").values()] == ["two"]


def test_rerun_with_other_options_replaces_the_whole_set(tmp_path, source):
    out = tmp_path / "out"
    assert invoke("detect", source, "-o", out, *FAST).exit_code == 0
    assert len(list(out.glob("clip.*"))) == 6  # five formats and the COCO results list
    assert invoke("detect", source, "-o", out, "--conf", "0.5", "--format", "coco", *FAST).exit_code == 0
    assert sorted(p.name for p in out.glob("clip.*")) == ["clip.coco-results.json", "clip.coco.json"]
    (record,) = manifest(out).values()
    assert list(record["outputs"]) == ["coco", "coco-results"] and record["options"]["conf"] == 0.5


def test_cvat_format_on_request_matches_the_coco_tracks(tmp_path, source):
    """--format cvat writes NAME.cvat.xml whose tracks are the COCO file's tracks, box for box."""
    import json
    import xml.etree.ElementTree as ET

    out = tmp_path / "out"
    assert invoke("detect", source, "-o", out, "--format", "cvat", "--format", "coco", "--conf", "0.05", *FAST).exit_code == 0
    coco = json.loads((out / "clip.coco.json").read_text())
    linked = [a for a in coco["annotations"] if "instance_id" in a]
    assert linked  # the clip gives tracks at this threshold
    root = ET.parse(out / "clip.cvat.xml").getroot()
    shown = [b for t in root.findall("track") for b in t.findall("box") if b.get("outside") == "0"]
    assert len(shown) == len(coco["annotations"]) and len(root.findall("track")) >= len({a["instance_id"] for a in linked})
    assert sorted(round(float(b.get("xtl")), 2) for b in shown) == sorted(round(a["bbox"][0], 2) for a in coco["annotations"])
    assert not (out / "clip.mot.txt").exists()  # on request only: the default set stays five
