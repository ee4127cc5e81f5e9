"""vidtag.io.encode: VideoEncoder and BackgroundEncoder."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.clips import frame_at, make_clip
from vidtag.errors import VideoError
from vidtag.io.decode import iter_chunks, probe
from vidtag.io.encode import BackgroundEncoder, VideoEncoder, default_x264_threads

W, H, FPS = 64, 48, 25

av = pytest.importorskip("av")


def _decoded(path):
    """(frames uint8[N, H, W, 3], times float[N]) of the first video stream, with PyAV."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), np.array([f.time for f in frames])


def _transcode(src, dst, encoder_cls=VideoEncoder, **options):
    """Decode ``src`` with iter_chunks and write every frame to ``dst`` at its pts."""
    info = probe(src)
    with encoder_cls(dst, info.width, info.height, info.fps, **options) as enc:
        for chunk in iter_chunks(src, chunk_size=8, info=info):
            for frame, t in zip(chunk.frames.numpy(), chunk.timestamps):
                enc.write(frame, float(t))
    return info


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("encoder_cls", [VideoEncoder, BackgroundEncoder])
def test_roundtrip_keeps_size_frames_and_pixels(tmp_path, encoder_cls):
    src = make_clip(tmp_path / "src.mp4", 20, W, H, FPS)
    out = tmp_path / "out.mp4"
    info = _transcode(src, out, encoder_cls)
    got = probe(out)
    assert (got.width, got.height, got.num_frames) == (info.width, info.height, info.num_frames)
    assert got.codec == "h264" and got.pixel_format == "yuv420p"
    frames, _ = _decoded(out)
    for i in (0, 7, 19):
        assert np.abs(frames[i].astype(int) - frame_at(i, W, H)).mean() < 4
    assert _leftovers(tmp_path, {"src.mp4", "out.mp4"}) == []


def test_output_is_faststart(tmp_path):
    out = tmp_path / "out.mp4"
    _transcode(make_clip(tmp_path / "src.mp4", 10, W, H, FPS), out)
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("lookahead", [None, 3])
def test_rate_control_lookahead_reaches_x264(tmp_path, lookahead):
    # x264 records the settings it encoded with in the stream (an SEI message)
    from vidtag.io.encode import DEFAULT_LOOKAHEAD

    out = tmp_path / "out.mp4"
    _transcode(make_clip(tmp_path / "src.mp4", 10, W, H, FPS), out, **({} if lookahead is None else {"lookahead": lookahead}))
    expected = DEFAULT_LOOKAHEAD if lookahead is None else lookahead
    assert f" rc_lookahead={expected} ".encode() in out.read_bytes()


@pytest.mark.parametrize("encoder_cls", [VideoEncoder, BackgroundEncoder])
@pytest.mark.parametrize(
    "times",
    [None, [0, 0.04, 0.08, 0.3, 0.34, 0.5, 1.0, 1.04, 1.2, 1.7]],
    ids=["constant", "variable"],
)
def test_frame_times_are_preserved(tmp_path, encoder_cls, times):
    src = make_clip(tmp_path / "src.mp4", 10, W, H, FPS, times=times)
    out = tmp_path / "out.mp4"
    _transcode(src, out, encoder_cls)
    _, src_times = _decoded(src)
    _, out_times = _decoded(out)
    assert len(out_times) == len(src_times)
    assert np.abs(out_times - src_times).max() < 0.5 / FPS


def test_source_time_base_is_kept_exactly(tmp_path):
    src = make_clip(tmp_path / "src.mp4", 10, W, H, 30000 / 1001)
    info = probe(src)
    out = tmp_path / "out.mp4"
    _transcode(src, out, time_base=info.extra["time_base"])
    np.testing.assert_allclose(_decoded(out)[1], _decoded(src)[1], atol=1e-6)


def test_odd_size_is_padded_by_one_pixel(tmp_path):
    width, height = 63, 47
    out = tmp_path / "odd.mp4"
    with VideoEncoder(out, width, height, FPS) as enc:
        assert (enc.coded_width, enc.coded_height) == (64, 48)
        for i in range(5):
            enc.write(frame_at(i, width, height), i / FPS)
    frames, _ = _decoded(out)
    assert frames.shape == (5, 48, 64, 3)
    assert np.abs(frames[2, :height, :width].astype(int) - frame_at(2, width, height)).mean() < 4
    # the added column / row repeat the edge pixels
    assert np.abs(frames[2, :height, width].astype(int) - frames[2, :height, width - 1]).mean() < 4
    assert np.abs(frames[2, height, :width].astype(int) - frames[2, height - 1, :width]).mean() < 4


def _audio_packets(path, count=5):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base)
        data = [bytes(p) for p in container.demux(stream) if p.size][:count]
        return stream.codec_context.name, duration, data


@pytest.mark.parametrize("encoder_cls", [VideoEncoder, BackgroundEncoder])
def test_audio_is_copied_without_reencoding(tmp_path, encoder_cls):
    src = make_clip(tmp_path / "src.mp4", 25, W, H, FPS, audio=True)
    out = tmp_path / "out.mp4"
    _transcode(src, out, encoder_cls, audio_source=src)
    codec, duration, packets = _audio_packets(src)
    out_codec, out_duration, out_packets = _audio_packets(out)
    assert out_codec == codec == "aac"
    assert out_duration == pytest.approx(duration, abs=0.05)
    assert out_packets == packets  # same bytes: copied, not re-encoded
    assert probe(out).num_frames == 25


def test_audio_mp4_cannot_hold_is_reencoded_to_aac(tmp_path):
    src = make_clip(tmp_path / "src.avi", 10, W, H, FPS, codec="mjpeg", audio=True)  # PCM audio
    out = tmp_path / "out.mp4"
    info = probe(src)
    with VideoEncoder(out, info.width, info.height, info.fps, audio_source=src) as enc:
        assert enc.audio_mode == "aac"
        for i in range(10):
            enc.write(frame_at(i, W, H), i / FPS)
    codec, duration, _ = _audio_packets(out)
    assert codec == "aac" and duration == pytest.approx(10 / FPS, abs=0.06)


def test_audio_source_without_audio_gives_silent_video(tmp_path):
    src = make_clip(tmp_path / "src.mp4", 5, W, H, FPS)
    with VideoEncoder(tmp_path / "out.mp4", W, H, FPS, audio_source=src) as enc:
        enc.write(frame_at(0, W, H), 0.0)
    assert enc.audio_mode is None
    assert not probe(tmp_path / "out.mp4").has_audio


@pytest.mark.parametrize("encoder_cls", [VideoEncoder, BackgroundEncoder])
def test_abort_and_errors_leave_no_file(tmp_path, encoder_cls):
    out = tmp_path / "out.mp4"
    enc = encoder_cls(out, W, H, FPS)
    enc.write(frame_at(0, W, H), 0.0)
    enc.abort()
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(RuntimeError):
        with encoder_cls(out, W, H, FPS) as enc:
            enc.write(frame_at(0, W, H), 0.0)
            raise RuntimeError("the model failed")
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(ValueError):
        with encoder_cls(out, W, H, FPS) as enc:
            enc.write(np.zeros((H, W + 2, 3), np.uint8), 0.0)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(VideoError, match="no frames"):
        with encoder_cls(out, W, H, FPS):
            pass
    assert list(tmp_path.iterdir()) == []


def test_background_encoder_reports_a_failure_from_its_thread(tmp_path, monkeypatch):
    def broken(self, frame, pts):
        raise OSError("disk full")

    monkeypatch.setattr(VideoEncoder, "_encode", broken)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError, match="disk full"):
        with BackgroundEncoder(out, W, H, FPS, queue_size=2) as enc:
            for i in range(50):
                enc.write(frame_at(i, W, H), i / FPS)
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("encode:")]


def test_missing_output_folder_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        VideoEncoder(tmp_path / "nope" / "out.mp4", W, H, FPS)


def test_default_threads_leave_cores_for_inference():
    assert default_x264_threads(1) == 1
    assert default_x264_threads(2) == 1
    assert default_x264_threads(8) == 2
    assert default_x264_threads(64) == 4
