"""Hard-cut detection (vidtag.shots) on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtag.shots import ShotBoundaries, cuts, thumbnails


def _scene(seed: int, t: int, shift: int = 2) -> torch.Tensor:
    """Tensor[T, 3, 72, 128] float: a smooth random scene panning right by ``shift`` px a frame."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 12, generator=gen), size=(72, 128 + shift * t), mode="bilinear")
    return torch.cat([base[..., shift * i : shift * i + 128] for i in range(t)])


def test_cuts_between_scenes_not_within_them():
    video = torch.cat((_scene(0, 7), _scene(1, 5), _scene(2, 4)))
    thumbs = thumbnails(video)
    assert thumbs.shape == (16, 18 * 32)
    torch.testing.assert_close(thumbs.norm(dim=1), torch.ones(16))
    assert cuts(thumbs) == [7, 12]
    # in pieces, with the last thumbnail of the piece before
    assert cuts(thumbs[:7]) == [] and cuts(thumbs[7:10], thumbs[6]) == [0] and cuts(thumbs[10:], thumbs[9]) == [2]
    assert cuts(thumbs, threshold=0.0) == []


def test_brightness_and_contrast_do_not_cut():
    scene = _scene(3, 6)
    dimmed = scene.clone()
    dimmed[3:] = dimmed[3:] * 0.3 + 0.05  # a darkness burst from frame 3 on
    assert cuts(thumbnails(dimmed)) == []


def test_flat_frames_and_bad_threshold():
    flat = torch.full((3, 3, 20, 20), 0.5)
    assert torch.equal(thumbnails(flat), torch.zeros(3, 18 * 32))
    assert cuts(thumbnails(flat)) == [1, 2]  # featureless frames correlate with nothing: NCC 0
    with pytest.raises(ValueError, match="cut threshold"):
        cuts(thumbnails(flat), threshold=-0.1)


def test_shot_boundaries_stream_over_chunks_and_bound_shots():
    from vidtag.models.preprocess import letterbox

    video = torch.cat((_scene(0, 7), _scene(1, 5), _scene(2, 4)))
    frames = (video * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    shots = ShotBoundaries(0.4, 96)
    found = [shots.push(*letterbox(frames[s : s + 5], 96)) for s in range(0, 16, 5)]
    assert found == [[], [2], [2], []] and shots.starts == [7, 12]
    assert [shots.shot_of(t, 16) for t in (0, 6, 7, 11, 12, 15)] == [(0, 7), (0, 7), (7, 12), (7, 12), (12, 16), (12, 16)]
    assert shots.shot_of(13, 14) == (12, 14)  # only 14 frames seen so far
    off = ShotBoundaries(0.0, 96)
    assert off.push(*letterbox(frames, 96)) == [] and off.shot_of(9, 16) == (0, 16)


@pytest.mark.parametrize("engine", ["torch", "openvino-f32"])
def test_frame_detector_reports_the_cuts_it_saw(engine):
    """Both paths find the cuts: torch's from the normalised input, an exported
    engine's from the uint8 pixels it is given (``preprocess.pixel_thumbnails``)."""
    from vidtag.models.build import DetectOptions, FrameDetector
    from vidtag.models.nanodet import load_nanodet
    from vidtag.types import FrameChunk

    video = torch.cat((_scene(0, 7), _scene(1, 5), _scene(2, 4)))
    frames = (video * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    chunks = [FrameChunk(s, frames[s : s + 6], np.arange(s, min(s + 6, 16)) / 10) for s in range(0, 16, 6)]
    if engine == "torch":
        model = load_nanodet().eval()
    else:
        from vidtag.models.runtime import load_engine
        from vidtag.weights import resolve_weights

        model = load_engine(engine, resolve_weights("nanodet-g-coco"))
    detector = FrameDetector(model, tuple(f"c{i}" for i in range(80)), DetectOptions(imgsz=96), torch.device("cpu"))
    assert len(list(detector.run(chunks))) == 16 and detector.shot_starts == [7, 12]
    detector.cut_threshold = 0.0
    list(detector.run(chunks[:1]))
    assert detector.shot_starts == []  # a new video forgets the last one's cuts


def test_pipeline_links_each_shot_apart(tmp_path):
    """detect_video hands the detector's shot starts to the linker: a box that stays put across a cut gets two tracks."""
    from tests.clips import make_clip
    from tests.conftest import BrightBoxDetector
    from vidtag.pipeline import detect_video

    class CutAt4(BrightBoxDetector):
        shot_starts = [4]

    path = tmp_path / "clip.mp4"
    make_clip(path, n_frames=8, width=96, height=64, fps=10)
    linked = detect_video(path, CutAt4(), link="seqnms+").detections
    ids = [d.track_ids.tolist() for d in linked]
    assert ids[:4] == [[1]] * 4 and all(i and i[0] > 1 for i in ids[4:])
    assert [d.track_ids.tolist() for d in detect_video(path, BrightBoxDetector(), link="seqnms+").detections] == [[1]] * 8


def test_cut_threshold_reaches_every_method_and_defaults_agree():
    import inspect

    from vidtag.api import Runner, Settings, detect
    from vidtag.cli import detect as detect_command
    from vidtag.shots import CUT_THRESHOLD

    cli_default = next(p.default for p in detect_command.params if p.name == "cut_threshold")
    assert Settings().cut_threshold == cli_default == inspect.signature(detect).parameters["cut_threshold"].default == CUT_THRESHOLD
    assert Runner(Settings(method="frame", device="cpu", cut_threshold=0.0)).detector.cut_threshold == 0.0
    assert Runner(Settings(method="psla", device="cpu", cut_threshold=0.25)).detector.model.config.cut_threshold == 0.25
    assert Runner(Settings(method="iff", device="cpu", cut_threshold=0.3)).detector.model.config.cut_threshold == 0.3
    assert Runner(Settings(method="psla", device="cpu")).detector.model.config.cut_threshold == CUT_THRESHOLD
    with pytest.raises(ValueError, match="cut threshold"):
        Runner(Settings(device="cpu", cut_threshold=1.5))
    assert Settings(cut_threshold=0.0).output_options(type("M", (), {"name": "w", "sha256": "s"})())["cut_threshold"] == 0.0
