"""The `vidtag` commands end to end with the real NanoDet-g (small input size for speed)."""

from __future__ import annotations

import json

import av
import numpy as np
import pandas as pd
import pytest

import vidtag
from tests.cli import invoke
from tests.clips import make_clip

FAST = ["--imgsz", "128"]


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("v") / "walk.mp4", n_frames=15, width=160, height=96, fps=15, audio=True)


@pytest.fixture(scope="module")
def detected(tmp_path_factory, clip_with_audio):
    out = tmp_path_factory.mktemp("out")
    result = invoke("detect", clip_with_audio, "-o", out, "--conf", "0.05", *FAST)
    assert result.exit_code == 0, result.stderr
    return out


def test_detect_writes_every_format(detected, clip_with_audio):
    names = sorted(p.name for p in detected.iterdir())
    assert names == sorted(["walk.coco.json", "walk.coco-results.json", "walk.mot.txt", "walk.mot.json", "walk.tracks.csv",
                            "walk.annotated.mp4", "vidtag-run.json"])
    from pycocotools.coco import COCO

    coco = COCO(str(detected / "walk.coco.json"))
    assert len(coco.getImgIds()) == 15 and len(coco.getCatIds()) == 80
    info = json.loads((detected / "walk.coco.json").read_text())["info"]
    assert info["method"] == "frame" and info["weights"] == "nanodet-g-coco" and len(info["weights_sha256"]) == 64
    table = pd.read_csv(detected / "walk.tracks.csv")
    assert list(table.columns) == ["video", "frame", "time_s", "track_id", "class_id", "class_name", "score",
                                   "x1", "y1", "x2", "y2"]
    record = json.loads((detected / "vidtag-run.json").read_text())["videos"][0]
    assert record["status"] == "done" and record["frames"] == 15
    assert set(record["outputs"]) == {"coco", "coco-results", "mot", "mot-json", "csv", "mp4"}


def test_annotated_video_matches_source(detected, clip_with_audio):
    with av.open(str(clip_with_audio)) as src, av.open(str(detected / "walk.annotated.mp4")) as out:
        sv, ov = src.streams.video[0], out.streams.video[0]
        assert ov.codec_context.name == "h264" and ov.codec_context.pix_fmt == "yuv420p"
        assert (ov.width, ov.height) == (sv.width, sv.height)
        src_times = [float(f.time) for f in src.decode(sv)]
        out_times = [float(f.time) for f in out.decode(ov)]
    assert len(out_times) == len(src_times) == 15
    assert np.allclose(np.array(out_times) - out_times[0], np.array(src_times) - src_times[0], atol=0.5 / 15)
    with av.open(str(detected / "walk.annotated.mp4")) as out, av.open(str(clip_with_audio)) as src:
        assert len(out.streams.audio) == 1
        assert out.streams.audio[0].codec_context.name == src.streams.audio[0].codec_context.name


def test_rerun_skips_and_overwrite_redoes(detected, clip_with_audio):
    before = (detected / "walk.coco.json").stat().st_mtime_ns
    result = invoke("detect", clip_with_audio, "-o", detected, "--conf", "0.05", *FAST)
    assert result.exit_code == 0 and "1 skipped" in result.stderr
    assert (detected / "walk.coco.json").stat().st_mtime_ns == before
    result = invoke("detect", clip_with_audio, "-o", detected, "--conf", "0.05", "--overwrite", *FAST)
    assert result.exit_code == 0 and "1 done" in result.stderr


def test_render_draws_saved_results(detected, clip_with_audio, tmp_path):
    out = tmp_path / "again.mp4"
    result = invoke("render", clip_with_audio, detected / "walk.coco.json", "-o", out)
    assert result.exit_code == 0, result.stderr
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 15


def test_render_refuses_mismatched_results(detected, tmp_path):
    other = make_clip(tmp_path / "other.mp4", n_frames=5, width=64, height=48, fps=10)
    result = invoke("render", other, detected / "walk.coco.json", "-o", tmp_path / "x.mp4")
    assert result.exit_code == 1 and "160x96" in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_info_and_models(clip_with_audio):
    result = invoke("info", clip_with_audio)
    assert result.exit_code == 0 and "160" in result.output and "has_audio" in result.output
    result = invoke("models")
    assert result.exit_code == 0 and "nanodet-g-coco" in result.output
    assert "nanodet-g-coco.features.onnx" in result.output and "runs OpenVINO" in result.output


def test_classes_filter(tmp_path, clip_with_audio):
    out = tmp_path / "out"
    result = invoke("detect", clip_with_audio, "-o", out, "--conf", "0.01", "--classes", "person,car", "--format", "csv", *FAST)
    assert result.exit_code == 0
    table = pd.read_csv(out / "walk.tracks.csv")
    assert set(table["class_name"]) <= {"person", "car"}


def test_python_api_matches_cli(detected, clip_with_audio):
    result = vidtag.detect(clip_with_audio, conf=0.05, imgsz=128)
    assert result.num_frames == 15 and len(result.timestamps) == 15
    total = sum(len(d) for d in result.detections)
    table = pd.read_csv(detected / "walk.tracks.csv")
    assert total == len(table)
    for dets in result.detections:
        assert dets.track_ids is not None and (dets.track_ids >= 1).all()
    unlinked = vidtag.detect(clip_with_audio, conf=0.05, imgsz=128, link="none")
    assert all(d.track_ids is None for d in unlinked.detections)


def test_psla_method_runs_with_shipped_modules(tmp_path, clip_with_audio):
    out = tmp_path / "out"
    result = invoke("detect", clip_with_audio, "-o", out, "--method", "psla", "--format", "coco", *FAST)
    assert result.exit_code == 0, result.stderr
    coco = json.loads((out / "walk.coco.json").read_text())
    assert len(coco["images"]) == 15 and coco["info"]["method"] == "psla"


def test_key_interval_reaches_the_detector_and_the_run_record(tmp_path, clip_with_audio):
    out = tmp_path / "out"
    result = invoke("detect", clip_with_audio, "-o", out, "--method", "psla", "--key-interval", "4", "--format", "coco", *FAST)
    assert result.exit_code == 0, result.stderr
    run = json.loads((out / "vidtag-run.json").read_text())
    assert "key_interval" in json.dumps(run) and '"key_interval": 4' in json.dumps(run)
    bad = invoke("detect", clip_with_audio, "-o", out, "--method", "psla", "--key-interval", "0", *FAST)
    assert bad.exit_code == 2 and "key-interval" in bad.stderr


def test_train_psla_then_detect_with_the_trained_modules(tmp_path, clip_with_audio):
    out = tmp_path / "modules"
    result = invoke("train", "psla", clip_with_audio, "-o", out, "--steps", "3", "--imgsz", "64", "--seed", "1", "--frames", "0:12")
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((out / "psla-nanodet-g.json").read_text())
    assert manifest["training"]["steps"] == 3 and manifest["training"]["data"][0]["frames"] == [0, 12]
    assert manifest["training"]["seeds"]["seed"] == 1 and manifest["made_by"].startswith("vidtag train psla")
    assert manifest["psla_config"]["offset_prior"] == 5.0 and manifest["psla_config"]["displacement_scaling"] == "stride"
    from vidtag.weights import file_sha256

    assert manifest["sha256"] == file_sha256(out / "psla-nanodet-g.pt")
    det_out = tmp_path / "out"
    result = invoke("detect", clip_with_audio, "-o", det_out, "--method", "psla", "--psla-weights", out / "psla-nanodet-g.json",
                    "--format", "coco", *FAST)
    assert result.exit_code == 0, result.stderr
    run = json.loads((det_out / "vidtag-run.json").read_text())
    assert str(out / "psla-nanodet-g.json") in json.dumps(run)


def test_train_psla_on_a_folder_of_videos_and_photos(tmp_path, clip_with_audio):
    import cv2

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "walk.mp4").write_bytes(clip_with_audio.read_bytes())
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (30, 40, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    cv2.imwrite(str(folder / "still.png"), photo)
    (folder / "notes.txt").write_text("not training data")
    out = tmp_path / "modules"
    result = invoke("train", "psla", folder, "-o", out, "--steps", "2", "--imgsz", "64", "--seed", "1")
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads((out / "psla-nanodet-g.json").read_text())["training"]["data"]
    assert [(d["file"], d["frames"]) for d in data] == [("still.png", [0, 48]), ("walk.mp4", [0, 15])]
    from vidtag.train.data import load_frames

    a, b = load_frames(folder / "still.png", 0, 6, 64), load_frames(folder / "still.png", 0, 6, 64)
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames[0], a.frames[5])  # seeded, and it moves


def test_train_iff_then_detect_with_the_trained_modules(tmp_path, clip_with_audio):
    out = tmp_path / "modules"
    result = invoke("train", "iff", clip_with_audio, "-o", out, "--steps", "2", "--imgsz", "64", "--module", "basic", "--trl", "0",
                    "--frames", "0:12")
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((out / "iff-basic-notrl-nanodet-g.json").read_text())
    assert manifest["iff_config"]["module"] == "basic" and manifest["iff_config"]["trl_weight"] == 0
    assert manifest["training"]["steps"] == 2 and manifest["made_by"].startswith("vidtag train iff")
    det_out = tmp_path / "out"
    result = invoke("detect", clip_with_audio, "-o", det_out, "--method", "iff", "--iff-weights", out / "iff-basic-notrl-nanodet-g.json",
                    "--window", "4", "--format", "coco", *FAST)
    assert result.exit_code == 0, result.stderr
    run = json.dumps(json.loads((det_out / "vidtag-run.json").read_text()))
    assert '"window": 4' in run and '"method": "iff"' in run
    odd = invoke("detect", clip_with_audio, "-o", tmp_path / "odd", "--method", "iff", "--iff-weights",
                 out / "iff-basic-notrl-nanodet-g.json", "--window", "5", *FAST)
    assert odd.exit_code == 2 and "even" in odd.stderr
    wrong = invoke("detect", clip_with_audio, "-o", tmp_path / "wrong", "--method", "iff", "--iff-weights",
                   out / "iff-basic-notrl-nanodet-g.json", "--iff-module", "advanced", *FAST)
    assert wrong.exit_code != 0 and "basic IFF module" in wrong.stderr


def test_train_psla_bad_arguments_are_usage_errors(tmp_path, clip_with_audio):
    result = invoke("train", "psla", clip_with_audio, "-o", tmp_path / "m", "--frames", "0:5", "--frames", "5:9")
    assert result.exit_code == 2 and "one START:STOP per input" in result.stderr
    result = invoke("train", "psla", clip_with_audio, "-o", tmp_path / "m", "--frames", "five")
    assert result.exit_code == 2 and "START:STOP" in result.stderr
    labels = tmp_path / "gt.json"
    labels.write_text(json.dumps({"videos": [{"id": 1, "name": "run"}, {"id": 2, "name": "jump"}],
                                  "images": [{"id": 1, "video_id": 1, "frame_id": 0}, {"id": 2, "video_id": 2, "frame_id": 0}],
                                  "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    result = invoke("train", "psla", clip_with_audio, "-o", tmp_path / "m", "--labels", labels, "--steps", "1")
    assert result.exit_code == 2 and "gt.json" in result.stderr and "no labelled video named 'walk'" in result.stderr
