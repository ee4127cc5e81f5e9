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
from vidtag.models.runtime import OnnxNanoDet, resolve_runtime
from vidtag.weights import resolve_weights

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def manifest():
    return resolve_weights("nanodet-g-coco")


def test_auto_picks_onnxruntime_for_frame_on_cpu_only(manifest):
    assert resolve_runtime("auto", "frame", CPU, manifest) == "onnxruntime"
    assert resolve_runtime("auto", "psla", CPU, manifest) == "torch"
    assert resolve_runtime("auto", "iff", CPU, manifest) == "onnxruntime"
    assert resolve_runtime("auto", "frame", torch.device("cuda"), manifest) == "torch"
    assert resolve_runtime("torch", "frame", CPU, manifest) == "torch"
    with pytest.raises(ValueError, match="--method psla"):
        resolve_runtime("onnxruntime", "psla", CPU, manifest)
    with pytest.raises(ValueError, match="cuda"):
        resolve_runtime("onnxruntime", "frame", torch.device("cuda"), manifest)
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime("tensorrt", "frame", CPU, manifest)


@pytest.mark.parametrize("shape", [(1, 3, 320, 416), (3, 3, 256, 192)])
def test_onnx_export_matches_the_torch_model(manifest, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        want = load_nanodet(manifest, channels_last=False)(x)
    got = OnnxNanoDet(manifest, threads=1)(x)
    assert got.level_shapes == want.level_shapes and got.strides == want.strides
    torch.testing.assert_close(got.cls_scores, want.cls_scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.box_dists, want.box_dists, atol=1e-3, rtol=1e-4)


def test_detect_gives_the_same_boxes_with_either_runtime(tmp_path):
    from vidtag.api import Runner, Settings

    video = make_clip(tmp_path / "v.mp4", n_frames=6, width=160, height=96)
    results = {}
    for runtime in ("torch", "onnxruntime"):
        runner = Runner(Settings(runtime=runtime, imgsz=160, device="cpu", link="none", conf=0.05))
        assert runner.detector.runtime == runtime
        results[runtime] = runner.detect(video).detections
    for a, b in zip(results["torch"], results["onnxruntime"], strict=True):
        assert len(a.boxes) == len(b.boxes)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_a_changed_or_missing_export_is_a_clear_error(tmp_path, manifest):
    folder = tmp_path / "weights"
    shutil.copytree(manifest.manifest_path.parent, folder, ignore=shutil.ignore_patterns("psla*", "iff*"))
    changed = folder / manifest.exports["onnxruntime"]["head"]["file"]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        OnnxNanoDet(resolve_weights("nanodet-g-coco", folder))
    changed.unlink()
    with pytest.raises(WeightsError, match="not found"):
        OnnxNanoDet(resolve_weights("nanodet-g-coco", folder))


def test_iff_runs_its_network_parts_in_onnxruntime(tmp_path):
    """iff with ONNX Runtime: N_m and the head in the export, the modules in torch; the same boxes as torch's."""
    from vidtag.api import Runner, Settings

    video = make_clip(tmp_path / "v.mp4", n_frames=7, width=160, height=96)
    results = {}
    for runtime in ("torch", "onnxruntime"):
        runner = Runner(Settings(method="iff", window=4, runtime=runtime, imgsz=160, device="cpu", link="none", conf=0.05))
        assert (runner.detector.model.engine is not None) == (runtime == "onnxruntime")
        results[runtime] = runner.detect(video).detections
    for a, b in zip(results["torch"], results["onnxruntime"], strict=True):
        assert len(a.boxes) == len(b.boxes)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
