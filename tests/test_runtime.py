"""ONNX Runtime and OpenVINO for the network: the choice of runtime, the shipped export
(the per-frame graphs and psla's split) against the torch model, the methods run
with it, and what a user sees when the export is missing or changed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.clips import make_clip
from vidtag.errors import WeightsError
from vidtag.models.nanodet import load_nanodet
from vidtag.models.psla import PSLAConfig, build_psla
from vidtag.models.runtime import OnnxNanoDet, OpenVinoNanoDet, resolve_runtime
from vidtag.weights import resolve_weights

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def manifest():
    return resolve_weights("nanodet-g-coco")


def shipped_psla_config() -> PSLAConfig:
    import json

    from vidtag.models.build import PSLA_WEIGHTS
    from vidtag.weights import default_weights_dir

    return PSLAConfig.from_saved(json.loads((default_weights_dir() / PSLA_WEIGHTS).read_text())["psla_config"])


def test_auto_picks_openvino_on_cpu_only_and_for_psla_where_the_export_has_its_split(manifest):
    shipped = shipped_psla_config()
    assert resolve_runtime("auto", "frame", CPU, manifest) == "openvino"
    assert resolve_runtime("auto", "iff", CPU, manifest) == "openvino"
    assert resolve_runtime("auto", "psla", CPU, manifest, shipped) == "openvino"
    assert resolve_runtime("onnxruntime", "psla", CPU, manifest, shipped) == "onnxruntime"
    assert resolve_runtime("onnxruntime", "frame", CPU, manifest) == "onnxruntime"
    assert resolve_runtime("auto", "frame", torch.device("cuda"), manifest) == "torch"
    assert resolve_runtime("auto", "psla", torch.device("cuda"), manifest, shipped) == "torch"
    assert resolve_runtime("torch", "frame", CPU, manifest) == "torch"
    # modules split elsewhere than the shipped graphs: torch, or an error that says why
    for other in (PSLAConfig(split_stage=1), PSLAConfig(feature="neck")):
        assert resolve_runtime("auto", "psla", CPU, manifest, other) == "torch"
        with pytest.raises(ValueError, match=f"stage {other.split_stage} with '{other.feature}' features"):
            resolve_runtime("onnxruntime", "psla", CPU, manifest, other)
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


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino-f32"])
@pytest.mark.parametrize("shape", [(1, 3, 320, 416), (3, 3, 256, 192)])
def test_psla_graphs_match_its_torch_parts(manifest, shape, engine):
    """Each psla graph on the torch parts' input: N_l (low), N_f from the low feature
    (high: the head levels' 3x3 convs), N_t (predict: the 1x1 predictors)."""
    config = shipped_psla_config()
    model = OnnxNanoDet(manifest, threads=1) if engine == "onnxruntime" else OpenVinoNanoDet(manifest, threads=1, precision="f32")
    assert model.psla_split == (config.split_stage, config.feature)
    psla = build_psla(load_nanodet(manifest, channels_last=False), config)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        low = psla.low_features(x)
        high = psla.high_features(None, low)
        want = psla.predict(high)
    torch.testing.assert_close(model.psla_low(x), low, atol=1e-4, rtol=1e-4)
    for got, expected in zip(model.psla_high(low), high, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    got = model.psla_predict(high)
    assert got.level_shapes == want.level_shapes and got.strides == want.strides
    torch.testing.assert_close(got.cls_scores, want.cls_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.box_dists, want.box_dists, atol=1e-3, rtol=1e-4)


def test_psla_detector_runs_the_engine_at_inference_only(manifest):
    """With an engine set, PSLADetector's network parts run it where no gradient is
    recorded; training (gradients on) runs the torch NanoDet; another split is refused."""
    config = shipped_psla_config()
    psla = build_psla(load_nanodet(manifest, channels_last=False), config)
    engine = OnnxNanoDet(manifest, threads=1)
    calls = []
    original = engine._run
    engine._run = lambda part, inputs: (calls.append(part), original(part, inputs))[1]
    psla.set_engine(engine)
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        out = psla.predict(psla.high_features(x))
    assert calls == ["low", "high", "predict"]
    calls.clear()
    trained = psla.predict(psla.high_features(x))  # gradients on: torch
    assert calls == []
    torch.testing.assert_close(out.cls_scores, trained.cls_scores.detach(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="split_stage"):
        build_psla(load_nanodet(manifest, channels_last=False), PSLAConfig(split_stage=1)).set_engine(engine)


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


def test_a_changed_or_missing_psla_graph_is_a_clear_error_when_first_used(tmp_path, manifest):
    import json

    folder = tmp_path / "weights"
    shutil.copytree(manifest.manifest_path.parent, folder, ignore=shutil.ignore_patterns("psla*", "iff*"))
    changed = folder / manifest.exports["onnxruntime"]["psla"]["high"]["file"]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    x = torch.zeros(1, 3, 64, 64)
    for engine in (OnnxNanoDet, OpenVinoNanoDet):
        model = engine(resolve_weights("nanodet-g-coco", folder))  # frame and iff do not need the psla graphs
        assert model.psla_low(x).shape == (1, 32, 16, 16)
        with pytest.raises(WeightsError, match="sha256"):
            model.psla_high(torch.zeros(1, 32, 16, 16))
    data = json.loads((folder / "nanodet-g-coco.json").read_text())
    del data["exports"]["onnxruntime"]["psla"]
    (folder / "nanodet-g-coco.json").write_text(json.dumps(data))
    without = resolve_weights("nanodet-g-coco", folder)
    assert resolve_runtime("auto", "psla", CPU, without, shipped_psla_config()) == "torch"
    with pytest.raises(ValueError, match="no graphs for --method psla"):
        resolve_runtime("openvino", "psla", CPU, without, shipped_psla_config())
    with pytest.raises(WeightsError, match="no psla low graph"):
        OnnxNanoDet(without).psla_low(x)


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


def test_psla_runs_its_network_parts_in_an_exported_runtime(tmp_path):
    """psla with OpenVINO (f32): N_l, N_f and N_t in the export, its modules in torch; the
    same boxes as torch's, with the shipped inference config (appearance matching),
    the trained one (PSLA, RFU, DenseFT) and every non-key frame promoted (N_f on a batch)."""
    from vidtag.api import Runner, Settings
    from vidtag.models.build import DetectOptions, DetectorSettings, build_detector
    from vidtag.models.psla import PSLAVideoDetector

    video = make_clip(tmp_path / "v.mp4", n_frames=9, width=160, height=96)
    results, frames = {}, {}
    for runtime in ("torch", "openvino-f32"):
        runner = Runner(Settings(method="psla", key_interval=4, runtime=runtime, imgsz=160, device="cpu", link="none", conf=0.05))
        assert (runner.detector.model.engine is not None) == (runtime != "torch")
        assert runner.detector.runtime == {"openvino-f32": "openvino (f32)"}.get(runtime, runtime)
        results[runtime] = runner.detect(video).detections
        frames[runtime] = (runner.detector.state.key_frames, runner.detector.promoted_frames)
        variants = {"trained": {"nonkey_affinity": "memory", "use_rfu": True, "key_interval": 4},
                    "promoted": {"promote_below": 1.0, "key_interval": 4}}  # every non-key frame runs N_f too
        for name, options in variants.items():
            settings = DetectorSettings("psla", None, DetectOptions(imgsz=160, conf=0.05), "cpu", options, runtime=runtime)
            detector, _ = build_detector(settings)
            assert isinstance(detector, PSLAVideoDetector) and (detector.model.engine is not None) == (runtime != "torch")
            runner.detector = detector
            results[runtime, name] = runner.detect(video).detections
            frames[runtime, name] = (detector.state.key_frames, detector.promoted_frames)
    assert len(frames["torch", "promoted"][1]) == 6
    for key in ("torch", ("torch", "trained"), ("torch", "promoted")):
        other = "openvino-f32" if key == "torch" else ("openvino-f32", key[1])
        assert frames[key] == frames[other] and len(results[key]) == 9
        for a, b in zip(results[key], results[other], strict=True):
            assert len(a.boxes) == len(b.boxes)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)


@pytest.mark.parametrize("method", ["frame", "iff", "psla"])
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
