"""ONNX Runtime for the per-frame network: the choice of runtime, the shipped export
against the torch model, and what a user sees when the export is missing or changed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.clips import make_clip
from vidtag.errors import WeightsError
from vidtag.models.nanodet import load_nanodet
from vidtag.models.runtime import OnnxNanoDet, OpenVinoNanoDet, resolve_runtime
from vidtag.weights import resolve_weights

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def manifest():
    return resolve_weights("nanodet-g-coco")


def test_auto_picks_openvino_for_frame_and_iff_on_cpu_only(manifest):
    assert resolve_runtime("auto", "frame", CPU, manifest) == "openvino"
    assert resolve_runtime("auto", "psla", CPU, manifest) == "torch"
    assert resolve_runtime("auto", "iff", CPU, manifest) == "openvino"
    assert resolve_runtime("onnxruntime", "frame", CPU, manifest) == "onnxruntime"
    assert resolve_runtime("auto", "frame", torch.device("cuda"), manifest) == "torch"
    assert resolve_runtime("torch", "frame", CPU, manifest) == "torch"
    with pytest.raises(ValueError, match="--method psla"):
        resolve_runtime("onnxruntime", "psla", CPU, manifest)
    with pytest.raises(ValueError, match="cuda"):
        resolve_runtime("onnxruntime", "frame", torch.device("cuda"), manifest)
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime("tensorrt", "frame", CPU, manifest)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino-f32", "openvino-bf16"])
@pytest.mark.parametrize("shape", [(1, 3, 320, 416), (3, 3, 256, 192)])
def test_exported_graphs_match_the_torch_model(manifest, shape, engine):
    """f32 engines to float tolerance; bf16 (where the CPU has it) within bf16's error on scores in [0, 1]."""
    if engine == "onnxruntime":
        model, atol = OnnxNanoDet(manifest, threads=1), 1e-4
    else:
        precision = engine.split("-")[1]
        if precision == "bf16":
            import openvino as ov

            if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                pytest.skip("this CPU has no bf16 units")
        model, atol = OpenVinoNanoDet(manifest, threads=1, precision=precision), 1e-4 if precision == "f32" else 0.05
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        want = load_nanodet(manifest, channels_last=False)(x)
    got = model(x)
    assert got.level_shapes == want.level_shapes and got.strides == want.strides
    torch.testing.assert_close(got.cls_scores, want.cls_scores, atol=atol, rtol=0)
    if atol < 1e-3:
        torch.testing.assert_close(got.box_dists, want.box_dists, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino-f32"])
@pytest.mark.parametrize("width, height", [(160, 96), (90, 200), (416, 416)])
def test_from_pixels_matches_the_torch_model_on_the_letterboxed_input(manifest, engine, width, height):
    """The joined OpenVINO graph normalises, pads and reorders channels itself: the same
    output as torch's network on ``preprocess.letterbox``'s input (padding on either axis)."""
    from vidtag.models.preprocess import letterbox, resize_for_input

    frames = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    model = OnnxNanoDet(manifest, threads=1) if engine == "onnxruntime" else OpenVinoNanoDet(manifest, threads=1, precision="f32")
    pixels, box = resize_for_input(frames, 160)
    got = model.from_pixels(pixels, box)
    x, _ = letterbox(frames, 160)
    with torch.inference_mode():
        want = load_nanodet(manifest, channels_last=False)(x)
    assert got.level_shapes == want.level_shapes and got.strides == want.strides
    torch.testing.assert_close(got.cls_scores, want.cls_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.box_dists, want.box_dists, atol=1e-3, rtol=1e-4)


def test_detect_gives_the_same_boxes_with_either_runtime(tmp_path):
    from vidtag.api import Runner, Settings

    video = make_clip(tmp_path / "v.mp4", n_frames=6, width=160, height=96)
    results = {}
    for runtime in ("torch", "onnxruntime", "openvino-f32"):
        runner = Runner(Settings(runtime=runtime, imgsz=160, device="cpu", link="none", conf=0.05))
        assert runner.detector.runtime == {"openvino-f32": "openvino (f32)"}.get(runtime, runtime)
        results[runtime] = runner.detect(video).detections
    for other in ("onnxruntime", "openvino-f32"):
        for a, b in zip(results["torch"], results[other], strict=True):
            assert len(a.boxes) == len(b.boxes)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_a_changed_or_missing_export_is_a_clear_error(tmp_path, manifest):
    folder = tmp_path / "weights"
    shutil.copytree(manifest.manifest_path.parent, folder, ignore=shutil.ignore_patterns("psla*", "iff*"))
    changed = folder / manifest.exports["onnxruntime"]["head"]["file"]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    for engine in (OnnxNanoDet, OpenVinoNanoDet):
        with pytest.raises(WeightsError, match="sha256"):
            engine(resolve_weights("nanodet-g-coco", folder))
    changed.unlink()
    with pytest.raises(WeightsError, match="not found"):
        OpenVinoNanoDet(resolve_weights("nanodet-g-coco", folder))


def test_iff_runs_its_network_parts_in_an_exported_runtime(tmp_path):
    """iff with OpenVINO (f32): N_m and the head in the export, the modules in torch; the same boxes as torch's."""
    from vidtag.api import Runner, Settings

    video = make_clip(tmp_path / "v.mp4", n_frames=7, width=160, height=96)
    results = {}
    for runtime in ("torch", "openvino-f32"):
        runner = Runner(Settings(method="iff", window=4, runtime=runtime, imgsz=160, device="cpu", link="none", conf=0.05))
        assert (runner.detector.model.engine is not None) == (runtime != "torch")
        results[runtime] = runner.detect(video).detections
    for a, b in zip(results["torch"], results["openvino-f32"], strict=True):
        assert len(a.boxes) == len(b.boxes)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)


@pytest.mark.parametrize("method", ["frame", "iff"])
def test_a_video_ends_by_releasing_the_runtime_buffers_and_the_next_one_detects_the_same(tmp_path, method, monkeypatch):
    from vidtag.api import Runner, Settings

    released = []
    original = OpenVinoNanoDet.release_memory
    monkeypatch.setattr(OpenVinoNanoDet, "release_memory", lambda self: (released.append(True), original(self)))
    video = make_clip(tmp_path / "v.mp4", n_frames=6, width=160, height=96)
    runner = Runner(Settings(method=method, window=4, runtime="openvino-f32", imgsz=160, device="cpu", link="none", conf=0.05))
    first = runner.detect(video).detections
    assert len(released) == 1  # once, when the video ended
    second = runner.detect(video).detections  # buffers allocated again
    assert len(released) == 2
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
