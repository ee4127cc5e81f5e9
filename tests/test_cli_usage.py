"""The CLI refuses what would mislead, says what it does, and takes the options `yolo predict` users reach for."""

from __future__ import annotations

import json
import re

import av
import numpy as np
import pandas as pd
import pytest

from tests.cli import invoke
from tests.clips import make_clip

FAST = ["--imgsz", "128"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("c") / "walk.mp4", n_frames=12, width=160, height=96, fps=10)


@pytest.fixture(scope="module")
def detected(tmp_path_factory, clip):
    out = tmp_path_factory.mktemp("out")
    assert invoke("detect", clip, "-o", out, "--conf", "0.05", "--format", "coco", *FAST).exit_code == 0
    return out / "walk.coco.json"


# --- 4, 5: render ------------------------------------------------------------


@pytest.mark.parametrize("target", ["video", "results"])
def test_render_refuses_to_write_over_an_input(tmp_path, clip, detected, target):
    video, results = tmp_path / "v.mp4", tmp_path / "r.coco.json"
    video.write_bytes(clip.read_bytes())
    results.write_bytes(detected.read_bytes())
    before = (video.read_bytes(), results.read_bytes())
    result = invoke("render", video, results, "-o", video if target == "video" else results)
    assert result.exit_code == 2 and "would destroy it" in result.output + result.stderr
    assert (video.read_bytes(), results.read_bytes()) == before


def test_render_refuses_results_for_fewer_frames(tmp_path, clip, detected):
    longer = make_clip(tmp_path / "longer.mp4", n_frames=20, width=160, height=96, fps=10)
    result = invoke("render", longer, detected, "-o", tmp_path / "x.mp4")
    assert result.exit_code == 1 and "12 frames" in result.stderr and "20" in result.stderr
    assert not (tmp_path / "x.mp4").exists()


# --- 6: eval -----------------------------------------------------------------


def test_eval_skips_tracking_metrics_without_ground_truth_track_ids(tmp_path, detected):
    data = json.loads(detected.read_text())
    assert any("instance_id" in a for a in data["annotations"])  # the prediction has tracks
    for a in data["annotations"]:
        a.pop("instance_id", None)
        a.pop("attributes", None)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(data))
    result = invoke("eval", detected, gt, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    assert not re.search(r"│\s*IDF1\s*│", result.output) and "no track ids" in result.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["tracking"] is None and "no track ids" in scores["tracking_skipped"]
    with_ids = invoke("eval", detected, detected)
    assert re.search(r"│\s*IDF1\s*│", with_ids.output)


# --- 7: --link none ------------------------------------------------------------


def test_link_none_leaves_out_mot_files_and_refuses_them_when_asked(tmp_path, clip):
    out = tmp_path / "out"
    result = invoke("detect", clip, "-o", out, "--link", "none", *FAST)
    assert result.exit_code == 0 and "no MOT files" in result.stderr
    assert sorted(p.name for p in out.glob("walk.*")) == ["walk.annotated.mp4", "walk.coco-results.json", "walk.coco.json", "walk.tracks.csv"]
    asked = invoke("detect", clip, "-o", tmp_path / "o2", "--link", "none", "--format", "mot")
    assert asked.exit_code == 2 and "--link none" in asked.output + asked.stderr


# --- 8: output without a terminal ---------------------------------------------


def test_plain_output_names_each_video_and_never_wraps(tmp_path, clip):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("first", "second"):
        (folder / f"{name}.mp4").write_bytes(clip.read_bytes())
    out = tmp_path / ("a-long-output-folder-name-" * 4)
    result = invoke("detect", folder, "-o", out, "--format", "csv", *FAST)
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    for name in ("first", "second"):
        assert any(line.strip().startswith(f"{folder / name}.mp4: done:") for line in lines), result.stderr
    assert any(line.startswith("2 done, 0 skipped, 0 failed -> ") and line.endswith("vidtag-run.json)") for line in lines)


# --- 9, 10, 11: classes, models, usage errors before the model loads ------------


def test_class_names_suggest_and_ids_are_taken(tmp_path, clip):
    wrong = invoke("detect", clip, "-o", tmp_path / "o", "--classes", "persn")
    assert wrong.exit_code == 2 and "did you mean 'person'" in wrong.output + wrong.stderr
    out = tmp_path / "ids"
    assert invoke("detect", clip, "-o", out, "--classes", "0", "--conf", "0.01", "--format", "csv", *FAST).exit_code == 0
    table = pd.read_csv(out / "walk.tracks.csv")
    assert set(table["class_name"]) <= {"person"}
    listing = invoke("models", "--classes")
    assert listing.exit_code == 0 and "toothbrush" in listing.output and "  79  toothbrush" in listing.output


def test_models_separates_temporal_modules_and_refuses_them_as_weights(tmp_path, clip):
    listing = invoke("models")
    assert listing.exit_code == 0
    detectors, modules = listing.output.split("Temporal modules")
    assert "nanodet-g-coco" in detectors and "psla-nanodet-g" not in detectors
    assert "psla-nanodet-g (psla)" in modules and "trained on" in modules
    made_by = [line for line in listing.output.splitlines() if line.strip().startswith("made by:")]
    assert made_by and not any("/" in line for line in made_by)  # no paths of the machine that built them
    result = invoke("detect", clip, "-o", tmp_path / "o", "--weights", "psla-nanodet-g")
    assert result.exit_code == 2 and "--psla-weights" in result.output + result.stderr


@pytest.mark.parametrize("case", ["output is a file", "unknown weights", "missing input", "bad time", "gate without iff", "carry without iff"])
def test_usage_errors_exit_2_before_the_model_loads(tmp_path, clip, monkeypatch, case):
    import vidtag.models.nanodet

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the usage error")

    monkeypatch.setattr(vidtag.models.nanodet, "load_nanodet", no_model)
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = {"output is a file": [clip, "-o", afile], "unknown weights": [clip, "--weights", "nope"],
            "missing input": [tmp_path / "nothere.mp4"], "bad time": [clip, "--start", "soon"],
            "gate without iff": [clip, "--clean-gate", "0.5"], "carry without iff": [clip, "--no-carry"]}[case]
    result = invoke("detect", *args)
    assert result.exit_code == 2, result.output + result.stderr


# --- 12: the options yolo predict users reach for ------------------------------


def test_iou_max_det_and_time_range(tmp_path, clip):
    out = tmp_path / "out"
    common = ["--conf", "0.01", "--link", "none", "--format", "csv", *FAST]
    assert invoke("detect", clip, "-o", out, "--max-det", "1", *common).exit_code == 0
    table = pd.read_csv(out / "walk.tracks.csv")
    assert len(table) and table.groupby("frame").size().max() == 1
    assert invoke("detect", clip, "-o", tmp_path / "loose", "--iou", "0.95", *common).exit_code == 0
    assert invoke("detect", clip, "-o", tmp_path / "tight", "--iou", "0.1", *common).exit_code == 0
    loose, tight = (len(pd.read_csv(tmp_path / d / "walk.tracks.csv")) for d in ("loose", "tight"))
    assert tight < loose
    part = tmp_path / "part"
    assert invoke("detect", clip, "-o", part, "--start", "0.3", "--end", "9f", "--conf", "0.01", *FAST).exit_code == 0
    frames = pd.read_csv(part / "walk.tracks.csv")["frame"]
    assert frames.min() >= 3 and frames.max() <= 8
    coco = json.loads((part / "walk.coco.json").read_text())
    assert [im["frame_id"] for im in coco["images"]] == list(range(3, 9))
    with av.open(str(part / "walk.annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    assert invoke("render", clip, part / "walk.coco.json", "-o", tmp_path / "again.mp4").exit_code == 0


def test_device_index_means_cuda(tmp_path, clip):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("detect", clip, "-o", tmp_path / "o", "--device", "0", *FAST)
    assert result.exit_code == 2 and "cuda:0" in result.output + result.stderr


def test_drawing_options_change_the_annotated_video(tmp_path, clip):
    def first_frame(*options):
        out = tmp_path / "-".join(options or ("plain",))
        assert invoke("detect", clip, "-o", out, "--conf", "0.05", "--format", "mp4", *options, *FAST).exit_code == 0
        with av.open(str(out / "walk.annotated.mp4")) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)

    plain = first_frame()
    source = first_frame("--conf", "1.0")  # nothing drawn
    drawn = {opt: np.abs(first_frame(*opt.split()) - source).sum() for opt in ("--hide-labels", "--hide-conf", "--line-width 6")}
    base = np.abs(plain - source).sum()
    assert base > 0
    assert drawn["--hide-labels"] < drawn["--hide-conf"] < base  # a shorter label draws less
    assert drawn["--line-width 6"] > base
