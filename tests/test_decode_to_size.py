"""Decoding straight to the network's input size: the frames, the letterbox that maps
them back to the video's pixels, and the pipeline choosing it only when nothing
needs full-size frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F

from tests.clips import make_clip
from vidtag.io.decode import iter_chunks, probe
from vidtag.models.build import DetectOptions
from vidtag.models.preprocess import letterbox
from vidtag.ops.letterbox import plan_letterbox


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("size") / "c.mp4", 12, 320, 240)


def test_scaled_chunks_match_full_size_frames_resized(clip):
    """Same frames, indices and timestamps; pixels within resampling differences of a torch bilinear resize."""
    info = probe(clip)
    full = list(iter_chunks(clip, 5, info=info))
    scaled = list(iter_chunks(clip, 5, info=info, size=(160, 120)))
    assert [c.start for c in scaled] == [c.start for c in full]
    for a, b in zip(full, scaled, strict=True):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        assert a.source_size is None and b.source_size == (320, 240)
        assert tuple(b.frames.shape) == (len(a), 120, 160, 3)
        reference = F.interpolate(a.frames.permute(0, 3, 1, 2).float(), size=(120, 160), mode="bilinear",
                                  antialias=True, align_corners=False).permute(0, 2, 3, 1)
        assert (b.frames.float() - reference).abs().mean() < 8  # of 255: resampling, not another frame


def test_a_size_that_is_not_smaller_gives_full_frames(clip):
    chunk = next(iter_chunks(clip, 4, size=(320, 240)))
    assert chunk.source_size is None and tuple(chunk.frames.shape[1:3]) == (240, 320)


def test_letterbox_of_scaled_frames_maps_boxes_to_the_video(clip):
    info = probe(clip)
    size = plan_letterbox((info.width, info.height), 128)[1]
    full = next(iter_chunks(clip, 4, info=info))
    scaled = next(iter_chunks(clip, 4, info=info, size=size))
    x_full, box_full = letterbox(full.frames, 128)
    x_scaled, box_scaled = letterbox(scaled.frames, 128, scaled.source_size)
    assert box_scaled == box_full and x_scaled.shape == x_full.shape
    assert (x_scaled - x_full).abs().mean() < 0.15  # normalised units (1 = 57 grey levels)
    with pytest.raises(ValueError, match="neither the source size"):
        letterbox(scaled.frames[:, :-2], 128, scaled.source_size)


class _Recorder:
    """A detector that only records the chunks it is given (and finds nothing)."""

    method = "frame"
    classes = ("x",)

    def __init__(self, imgsz: int):
        self.options = DetectOptions(imgsz=imgsz)
        self.sizes: list[tuple] = []

    def run(self, chunks):
        from vidtag.types import Detections

        for chunk in chunks:
            self.sizes.append((tuple(chunk.frames.shape[1:3]), chunk.source_size))
            for _ in range(len(chunk)):
                yield Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize("keep_frames", [False, True])
def test_pipeline_decodes_whole_videos_to_network_size_and_keeps_no_frames(clip, keep_frames):
    """Every format then comes from the same boxes: the annotated MP4 decodes again."""
    from vidtag.pipeline import detect_video

    detector = _Recorder(imgsz=96)
    result = detect_video(clip, detector, link="none", keep_frames=keep_frames)
    assert len(result.detections) == 12 and result.frames is None
    assert set(detector.sizes) == {((72, 96), (320, 240))}


def test_a_part_of_the_video_is_decoded_at_full_size(clip):
    from vidtag.io.decode import Span
    from vidtag.pipeline import detect_video

    detector = _Recorder(imgsz=96)
    result = detect_video(clip, detector, link="none", keep_frames=True, span=Span.from_text("2f", "9f"))
    assert len(result.detections) == 7 and result.frames is not None
    assert set(detector.sizes) == {((240, 320), None)}
