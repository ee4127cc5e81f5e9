"""CUDA paths: the same detections on the GPU as on the CPU (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.clips import make_clip

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_frame_detector_cuda_matches_cpu(tmp_path):
    from vidtag.models.build import DetectOptions, DetectorSettings, build_detector
    from vidtag.io.decode import iter_chunks

    video = make_clip(tmp_path / "v.mp4", 8, 160, 96, 10)
    frames = torch.cat([c.frames for c in iter_chunks(video, chunk_size=8)])
    options = DetectOptions(conf=0.05, imgsz=160)
    cpu, _ = build_detector(DetectorSettings("frame", options=options, device="cpu"))
    gpu, _ = build_detector(DetectorSettings("frame", options=options, device="cuda"))
    for a, b in zip(cpu.detect_frames(frames), gpu.detect_frames(frames)):
        keep = a.scores > 0.1  # near-threshold boxes may flip between devices
        assert len(b) >= keep.sum()
        for box, score, label in zip(a.boxes[keep], a.scores[keep], a.labels[keep]):
            same = (b.labels == label) & (np.abs(b.boxes - box).max(axis=1) < 0.5)
            assert same.any() and np.abs(b.scores[same] - score).min() < 1e-3


def test_cli_on_cuda(tmp_path):
    from click.testing import CliRunner

    from vidtag.cli import main

    video = make_clip(tmp_path / "v.mp4", 8, 160, 96, 10)
    result = CliRunner().invoke(main, ["detect", str(video), "-o", str(tmp_path / "out"), "--device", "cuda"])
    assert result.exit_code == 0, result.stderr
