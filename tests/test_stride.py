"""--vid-stride: which frames the network sees, held boxes, and interpolation of linked tracks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtag.models.build import DetectOptions, FrameDetector
from vidtag.stride import interpolate_held
from vidtag.types import Detections, FrameChunk


def track_frame(*boxes):
    """Detections from (x1, y1, x2, y2, track id) tuples, score 0.8, label 0."""
    if not boxes:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    a = np.array(boxes, np.float64)
    n = len(a)
    return Detections(a[:, :4].astype(np.float32), np.full(n, 0.8, np.float32), np.zeros(n, np.int64), a[:, 4].astype(np.int64))


def test_interpolation_hand_worked():
    # stride 4; track 1 goes from x=0 (frame 0) to x=8 (frame 4): frames 1-3 held at x=0
    # become x=2, 4, 6.  Track 2 ends at frame 0: held, not moved.  Frame 5 is held after
    # the last detected frame: unchanged.
    a = (0, 0, 10, 10, 1)
    gone = (50, 50, 60, 60, 2)
    frames = [track_frame(a, gone)] + [track_frame(a, gone)] * 3 + [track_frame((8, 0, 18, 10, 1))] + [track_frame((8, 0, 18, 10, 1))]
    out = interpolate_held(frames, 4)
    for t, x in zip((1, 2, 3), (2.0, 4.0, 6.0)):
        np.testing.assert_allclose(out[t].boxes[0], [x, 0, x + 10, 10])
        np.testing.assert_allclose(out[t].boxes[1], [50, 50, 60, 60])
        assert out[t].track_ids.tolist() == [1, 2]
    np.testing.assert_allclose(out[5].boxes[0], [8, 0, 18, 10])
    assert out[0] is frames[0] and out[4] is frames[4]


def test_interpolation_stops_at_a_cut_and_without_tracks():
    frames = [track_frame((0, 0, 10, 10, 1))] * 2 + [track_frame((20, 0, 30, 10, 1))]
    held = interpolate_held(frames, 2, shot_starts=[2])
    np.testing.assert_allclose(held[1].boxes[0], [0, 0, 10, 10])  # the next detected frame is another shot
    moved = interpolate_held(frames, 2)
    np.testing.assert_allclose(moved[1].boxes[0], [10, 0, 20, 10])
    untracked = [Detections(f.boxes, f.scores, f.labels) for f in frames]
    assert interpolate_held(untracked, 2)[1] is untracked[1]
    with pytest.raises(ValueError):
        interpolate_held(frames, 0)


class CountingModel(torch.nn.Module):
    """Stands in for NanoDet: records how many frames it saw."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return x


class MeanBoxOptions(DetectOptions):
    """Postprocess that puts one box whose x1 is the frame's mean brightness: frame-specific output."""

    def postprocess(self, output, box_map):
        means = output.mean(dim=(1, 2, 3)).tolist()
        return [Detections(np.array([[m, 0, m + 5, 5]], np.float32), np.array([0.9], np.float32), np.array([0])) for m in means]


def chunks_of(frames: np.ndarray, size: int):
    for s in range(0, len(frames), size):
        yield FrameChunk(s, torch.from_numpy(frames[s : s + size]), np.arange(s, min(s + size, len(frames))) / 10.0)


@pytest.mark.parametrize("stride,chunk", [(1, 4), (3, 4), (4, 4), (5, 3)])
def test_frame_detector_runs_every_kth_frame_and_holds_between(stride, chunk):
    frames = np.stack([np.full((32, 48, 3), 5 * i, np.uint8) for i in range(13)])
    model = CountingModel()
    det = FrameDetector(model, ("person",), MeanBoxOptions(imgsz=64), torch.device("cpu"), cut_threshold=0, vid_stride=stride)
    out = list(det.run(chunks_of(frames, chunk)))
    reference = list(FrameDetector(CountingModel(), ("person",), MeanBoxOptions(imgsz=64), torch.device("cpu"), cut_threshold=0).run(chunks_of(frames, chunk)))
    assert len(out) == 13
    assert model.seen == len(range(0, 13, stride))
    for t in range(13):
        source = t - t % stride
        np.testing.assert_array_equal(out[t].boxes, reference[source].boxes)
    if stride > 1:
        assert out[1] is not out[0]  # separate objects: linking sees separate frames


def test_vid_stride_refused_for_temporal_methods():
    from vidtag.models.build import DetectorSettings, build_detector

    with pytest.raises(ValueError, match="--vid-stride works with --method frame only"):
        build_detector(DetectorSettings("psla", vid_stride=2, device="cpu"))


def test_cli_vid_stride_links_and_interpolates(tmp_path, clip):
    """Through the CLI with the real model: the run records the stride and psla refuses it."""
    import json

    from click.testing import CliRunner

    from vidtag.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["detect", str(clip), "-o", str(out), "--vid-stride", "3", "--format", "mot-json", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "vidtag-run.json").read_text())
    record = next(iter(manifest["videos"].values())) if isinstance(manifest["videos"], dict) else manifest["videos"][0]
    assert record["options"]["vid_stride"] == 3
    refused = CliRunner().invoke(main, ["detect", str(clip), "-o", str(out), "--method", "psla", "--vid-stride", "2"])
    assert refused.exit_code == 2 and "--vid-stride" in refused.output
