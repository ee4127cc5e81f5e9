"""Box drawing and the annotated-video sink."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vidtag.formats import VideoMeta, open_sink
from vidtag.formats.video import (
    FONT,
    PALETTE,
    VideoSink,
    class_color,
    draw_detections,
    drawing_style,
    label_text,
    track_color,
)
from vidtag.types import Detections

CLASSES = ("person", "car")


def gray(h=360, w=640, value=90):
    return np.full((h, w, 3), value, np.uint8)


def one_box(box, track=None, label=0, score=0.9):
    return Detections([box], [score], [label], None if track is None else [track])


def test_draw_changes_pixels_inside_boxes_only():
    frame = gray()
    before = frame.copy()
    dets = Detections([[100, 150, 200, 300], [400, 50, 500, 120]], [0.9, 0.4], [0, 1], [3, 7])
    out = draw_detections(frame, dets, CLASSES)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, before)  # input untouched
    changed = (out != frame).any(axis=2)
    for x1, y1, x2, y2 in dets.boxes.astype(int):
        assert changed[y1:y2 + 1, x1:x2 + 1].any()
        assert changed[(y1 + y2) // 2, x1] and changed[y1, (x1 + x2) // 2]  # outline drawn
    # Far from boxes and labels nothing moves.
    assert not changed[330:, :].any() and not changed[:, 550:].any()


def test_draw_empty_returns_copy():
    frame = gray()
    out = draw_detections(frame, Detections.empty(), CLASSES)
    assert out is not frame
    np.testing.assert_array_equal(out, frame)


def test_draw_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((10, 10, 3), np.float32), Detections.empty(), CLASSES)
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((10, 10), np.uint8), Detections.empty(), CLASSES)


def test_colour_is_stable_per_track():
    assert track_color(5) == track_color(5) == track_color(5 + len(PALETTE))
    assert len({track_color(t) for t in range(1, 21)}) == 20
    assert all(isinstance(c, int) and 0 <= c <= 255 for col in PALETTE for c in col)
    # The same track is drawn in the same colour wherever it is, in any frame
    # and next to any other boxes.
    a = draw_detections(gray(), one_box([50, 100, 150, 250], track=4), CLASSES)
    b = draw_detections(
        gray(), Detections([[300, 40, 420, 300], [10, 10, 40, 40]], [0.3, 0.8], [1, 0], [4, 9]), CLASSES
    )
    assert tuple(a[175, 50]) == track_color(4)
    assert tuple(b[170, 300]) == track_color(4)
    assert tuple(b[25, 10]) == track_color(9)
    # Without a track the colour comes from the class.
    c = draw_detections(gray(), one_box([50, 100, 150, 250], label=1), CLASSES)
    d = draw_detections(gray(), one_box([50, 100, 150, 250], track=-1, label=1), CLASSES)
    assert tuple(c[175, 50]) == tuple(d[175, 50]) == class_color(1)


def test_label_text():
    assert label_text("car", 0.876, 12) == "car 0.88 #12"
    assert label_text("car", 0.5, None) == "car 0.50"
    assert label_text("car", 0.5, -1) == "car 0.50"


def test_labels_stay_inside_frame():
    h, w = 360, 640
    thickness, scale, text_thickness, pad = drawing_style(w, h)
    # Box touching the top-right corner: the label goes inside the box and is
    # shifted left so all of it is visible.
    dets = one_box([w - 10, 0, w - 1, 30], label=1, score=0.5)
    out = draw_detections(np.zeros((h, w, 3), np.uint8), dets, CLASSES)
    (tw, th), base = cv2.getTextSize(label_text("car", 0.5, None), FONT, scale, text_thickness)
    label_w, label_h = tw + 2 * pad, th + base + 2 * pad
    color = class_color(1)
    assert tuple(out[0, w - label_w]) == color  # top-left corner of the label background
    assert tuple(out[label_h - 1, w - 1]) == color
    # Box at the bottom edge with its top near the top: label above the box.
    dets = one_box([100, 40, 200, h - 1], track=2)
    out = draw_detections(np.zeros((h, w, 3), np.uint8), dets, CLASSES)
    assert tuple(out[40 - label_h, 100]) == track_color(2)


def test_boxes_outside_or_invalid_are_safe():
    frame = gray(100, 200)
    dets = Detections(
        [[-50, -50, -10, -10], [190, 90, 400, 300], [np.nan, 0, 10, 10], [-20, -20, 50, 50]],
        [0.5, 0.6, 0.7, 0.8],
        [0, 1, 0, 1],
    )
    out = draw_detections(frame, dets, CLASSES)
    assert out.shape == frame.shape
    assert (out != frame).any()


def test_style_scales_with_frame_size():
    small, large = drawing_style(640, 360), drawing_style(1920, 1080)
    assert large[0] > small[0] and large[1] > small[1]
    assert drawing_style(64, 36)[0] >= 1


# ---------------------------------------------------------------- VideoSink


class FakeEncoder:
    """Records what the sink sends; writes a small file on close."""

    instances: list["FakeEncoder"] = []

    def __init__(self, path, width, height, fps, *, audio_source=None, crf=23, preset="veryfast"):
        self.path = Path(path)
        self.args = (width, height, fps, audio_source, crf, preset)
        self.frames, self.pts = [], []
        self.closed = self.aborted = self.entered = False
        FakeEncoder.instances.append(self)

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, frame, pts_s):
        self.frames.append(frame)
        self.pts.append(pts_s)

    def close(self):
        self.closed = True
        self.path.write_bytes(b"fake mp4")

    def abort(self):
        self.aborted = True


def small_meta(num_frames=4):
    return VideoMeta("clip", 160, 96, 25.0, num_frames, CLASSES, {})


def test_video_sink_draws_and_encodes(tmp_path):
    path = tmp_path / "clip.annotated.mp4"
    stamps = [0.0, 0.05, 0.1, 0.2]
    frames = [gray(96, 160, 10 * i) for i in range(4)]
    with open_sink("mp4", path, small_meta(), timestamps=stamps, audio_source="src.mp4",
                   encoder_factory=FakeEncoder, crf=20) as sink:
        assert sink.needs_frames
        enc = FakeEncoder.instances[-1]
        assert enc.entered and enc.args == (160, 96, 25.0, "src.mp4", 20, VideoSink.DEFAULT_PRESET)
        assert enc.path.parent == tmp_path and enc.path.suffix == ".mp4" and enc.path != path
        for i, frame in enumerate(frames):
            dets = one_box([20, 20, 80, 70], track=1) if i % 2 == 0 else Detections.empty(with_tracks=True)
            sink.write(i, 99.0, dets, frame)
    assert enc.closed and not enc.aborted
    assert enc.pts == stamps  # the timestamps argument wins over write's
    assert (enc.frames[0] != frames[0]).any()
    np.testing.assert_array_equal(enc.frames[1], frames[1])
    assert path.read_bytes() == b"fake mp4"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_video_sink_checks_frames_and_aborts(tmp_path):
    path = tmp_path / "clip.annotated.mp4"
    sink = VideoSink(path, small_meta(), encoder_factory=FakeEncoder)
    with pytest.raises(ValueError, match="needs the decoded frame"):
        sink.write(0, 0.0, Detections.empty())
    with pytest.raises(ValueError, match="expected"):
        sink.write(0, 0.0, Detections.empty(), gray(100, 160))
    sink.write(0, 0.0, Detections.empty(), gray(96, 160))
    assert FakeEncoder.instances[-1].pts == [0.0]
    sink.abort()
    assert FakeEncoder.instances[-1].aborted
    assert list(tmp_path.iterdir()) == []


def test_video_sink_encoder_failure_leaves_nothing(tmp_path):
    class Broken(FakeEncoder):
        def close(self):
            self.path.write_bytes(b"half")
            raise OSError("disk full")

    path = tmp_path / "clip.annotated.mp4"
    with pytest.raises(OSError, match="disk full"):
        with VideoSink(path, small_meta(), encoder_factory=Broken) as sink:
            sink.write(0, 0.0, Detections.empty(), gray(96, 160))
    assert list(tmp_path.iterdir()) == []

    def failing_factory(*args, **kwargs):
        raise RuntimeError("no encoder")

    with pytest.raises(RuntimeError):
        VideoSink(path, small_meta(), encoder_factory=failing_factory)
    assert list(tmp_path.iterdir()) == []


def test_video_sink_with_real_encoder(tmp_path):
    pytest.importorskip("vidtag.io.encode")
    av = pytest.importorskip("av")
    meta = VideoMeta("clip", 160, 96, 25.0, 10, CLASSES, {})
    path = tmp_path / "clip.annotated.mp4"
    with open_sink("mp4", path, meta) as sink:
        for i in range(10):
            dets = one_box([20 + 5 * i, 20, 80 + 5 * i, 70], track=1)
            sink.write(i, i / 25.0, dets, gray(96, 160))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert len(frames) == 10
    assert (frames[0].width, frames[0].height) == (160, 96)
    times = [f.time for f in frames]
    np.testing.assert_allclose(times, np.arange(10) / 25.0, atol=1e-3)
    first = frames[0].to_ndarray(format="rgb24")
    # The box outline survives encoding; the background away from it stays gray.
    assert np.abs(first[30:60, 19:22].astype(int) - 90).max() > 40
    assert np.abs(first[80:, 120:].astype(int) - 90).max() < 12
