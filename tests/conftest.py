"""Shared fixtures: generated clips and a model-free detector for fast pipeline tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vidtag.types import Detections


@dataclass(frozen=True)
class FakeManifest:
    name: str = "fake"
    sha256: str = "0" * 64


class BrightBoxDetector:
    """Finds the bounding box of bright pixels in each frame: a model-free detector.

    Deterministic and cheap, so batch, manifest and format tests run in
    milliseconds while decode and write stay real.
    """

    classes = ("person", "car")

    def run(self, chunks):
        for chunk in chunks:
            frames = chunk.frames.numpy()
            for frame in frames:
                mask = frame.max(axis=2) > 200
                if not mask.any():
                    yield Detections.empty()
                    continue
                ys, xs = np.nonzero(mask)
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                yield Detections(np.array([box], np.float32), np.array([0.9], np.float32), np.array([0]))


@pytest.fixture
def fake_runner():
    from vidtag.api import Runner, Settings

    return Runner.with_detector(BrightBoxDetector(), FakeManifest(), Settings())


@pytest.fixture
def clip(tmp_path) -> Path:
    """A 12-frame 96x64 H.264 clip with a moving bright rectangle."""
    from tests.clips import make_clip

    path = tmp_path / "clip.mp4"
    make_clip(path, n_frames=12, width=96, height=64, fps=10)
    return path
