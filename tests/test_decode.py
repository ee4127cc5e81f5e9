"""vidtag.io.decode (probe, iter_chunks, decode_backend) and vidtag.io.prefetch."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.clips import frame_at, make_bad_videos, make_clip
from vidtag.errors import VideoError
from vidtag.io import decode
from vidtag.io.decode import decode_backend, iter_chunks, probe, rotate_frames
from vidtag.io.prefetch import prefetch

W, H, FPS, N = 64, 48, 25, 30


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Small clips shared by the tests of this module: name -> path."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "plain": make_clip(d / "plain.mp4", N, W, H, FPS),
        "audio": make_clip(d / "audio.mp4", N, W, H, FPS, audio=True),
        "vfr": make_clip(d / "vfr.mkv", 6, W, H, FPS, times=[0, 0.04, 0.2, 0.24, 0.7, 0.74]),
        "mjpeg": make_clip(d / "mjpeg.avi", 10, W, H, FPS, codec="mjpeg"),
        "long": make_clip(d / "long.mp4", 60, W, H, FPS),
    }
    for r in (90, 180, 270):
        out[f"rot{r}"] = make_clip(d / f"rot{r}.mp4", 8, W, H, FPS, rotation=r)
    return out


def _assert_one_line(err: VideoError, path, *phrases):
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    for phrase in phrases:
        assert phrase in text, text


def _all_frames(path, **kw):
    chunks = list(iter_chunks(path, **kw))
    return torch.cat([c.frames for c in chunks]).numpy(), np.concatenate([c.timestamps for c in chunks]), chunks


def _best_index(frame: np.ndarray, n: int, w: int, h: int, rotation: int = 0) -> int:
    """Which synthetic frame ``frame`` looks most like (moving boxes differ per index)."""
    errs = [np.abs(np.rot90(frame_at(i, w, h), -rotation // 90).astype(int) - frame).mean() for i in range(n)]
    return int(np.argmin(errs))


# ------------------------------------------------------------------------ probe


def test_probe_reads_metadata(clips):
    info = probe(clips["plain"])
    assert (info.width, info.height, info.num_frames) == (W, H, N)
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS, abs=0.05)
    assert info.codec == "h264" and info.pixel_format == "yuv420p"
    assert info.rotation == 0 and not info.has_audio
    assert info.extra["container_frames"] == N
    assert isinstance(info.extra["time_base"], Fraction)


def test_probe_sees_audio(clips):
    info = probe(clips["audio"])
    assert info.has_audio and info.extra["audio_codec"] == "aac"
    assert info.num_frames == N


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_probe_applies_rotation_to_size(clips, rotation):
    info = probe(clips[f"rot{rotation}"])
    assert info.rotation == rotation
    assert (info.width, info.height) == ((H, W) if rotation in (90, 270) else (W, H))
    assert (info.extra["coded_width"], info.extra["coded_height"]) == (W, H)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_videos(tmp_path_factory.mktemp("bad"), W, H, FPS)


@pytest.mark.parametrize(
    "name",
    [
        "missing", "directory", "empty", "text", "audio only",
        "unfinished mp4", "truncated", "unknown codec", "no frames",
    ],
)
def test_probe_explains_bad_files(bad_files, name):
    path, phrase = bad_files[name]
    with pytest.raises(VideoError) as info:
        probe(path)
    _assert_one_line(info.value, path, phrase)
    with pytest.raises(VideoError):  # iter_chunks probes first: same error, no traceback from C
        next(iter_chunks(path))


# ------------------------------------------------------------------------ frames


def test_iter_chunks_streams_every_frame_in_order(clips):
    info = probe(clips["plain"])
    chunks = list(iter_chunks(clips["plain"], chunk_size=7, info=info))
    assert [c.start for c in chunks] == [0, 7, 14, 21, 28]
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 2]
    frames = torch.cat([c.frames for c in chunks])
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (N, H, W, 3)
    assert sum(len(c) for c in chunks) == info.num_frames
    times = np.concatenate([c.timestamps for c in chunks])
    assert times.dtype == np.float64
    np.testing.assert_allclose(times, np.arange(N) / FPS, atol=1e-5)
    for i in (0, 1, 13, N - 1):
        assert np.abs(frames[i].numpy().astype(int) - frame_at(i, W, H)).mean() < 3
        assert _best_index(frames[i].numpy(), N, W, H) == i


def test_iter_chunks_keeps_variable_frame_times(clips):
    _, times, _ = _all_frames(clips["vfr"])
    np.testing.assert_allclose(times, [0, 0.04, 0.2, 0.24, 0.7, 0.74], atol=1e-5)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_iter_chunks_rotates_like_a_player(clips, rotation):
    path = clips[f"rot{rotation}"]
    info = probe(path)
    frames, times, _ = _all_frames(path, chunk_size=3, info=info)
    assert frames.shape == (8, info.height, info.width, 3)
    assert len(times) == info.num_frames
    # clockwise turn: the red marker of the coded top-left corner moves to
    # top-right (90), bottom-right (180), bottom-left (270)
    m = 4
    corners = {90: frames[0, :m, -m:], 180: frames[0, -m:, -m:], 270: frames[0, -m:, :m]}
    red = corners[rotation].reshape(-1, 3).mean(0)
    assert red[0] > 180 and red[1] < 80 and red[2] < 80
    for i in (0, 5):
        expected = np.rot90(frame_at(i, W, H), -rotation // 90)
        assert np.abs(frames[i].astype(int) - expected).mean() < 3


def test_rotate_frames_matches_numpy():
    x = torch.randint(0, 255, (2, 5, 7, 3), dtype=torch.uint8)
    for rotation in (0, 90, 180, 270):
        expected = np.stack([np.rot90(f, -rotation // 90) for f in x.numpy()])
        assert np.array_equal(rotate_frames(x, rotation).numpy(), expected)


@pytest.mark.parametrize("name", ["plain", "mjpeg", "vfr"])
def test_decord_and_pyav_backends_agree(clips, name):
    """The fast path (decord) against the plain reference (PyAV, frame by frame)."""
    path = clips[name]
    info = probe(path)
    fast = list(decode._chunks_decord(path, info, 4, "cpu"))
    slow = list(decode._chunks_pyav(path, info, 4, "cpu"))
    assert [c.start for c in fast] == [c.start for c in slow]
    a = torch.cat([c.frames for c in fast]).numpy().astype(int)
    b = torch.cat([c.frames for c in slow]).numpy().astype(int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 1.0
    np.testing.assert_allclose(
        np.concatenate([c.timestamps for c in fast]), np.concatenate([c.timestamps for c in slow]), atol=1e-5
    )


def test_iter_chunks_keeps_no_old_chunks(clips):
    refs = []
    for chunk in iter_chunks(clips["long"], chunk_size=8):
        refs.append(weakref.ref(chunk.frames))
        del chunk
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_corrupt_stream_fails_naming_the_frame(tmp_path):
    data = bytearray(make_clip(tmp_path / "ok.mp4", 60, W, H, FPS).read_bytes())
    for k in range(2000, len(data) - 3000, 50):  # damage the middle of mdat
        data[k] = 0xFF
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    info = probe(path)  # the container and first frame are intact
    with pytest.raises(VideoError) as err:
        for _ in iter_chunks(path, chunk_size=16, info=info):
            pass
    _assert_one_line(err.value, path, "cannot decode frame", f"of {info.num_frames}")


class _DropsLastFrames:
    """An input container whose decoder drops the stream's last ``drop`` frames (as FFmpeg does with a
    damaged last frame that decord still returns)."""

    def __init__(self, container, drop: int):
        self.container, self.drop = container, drop

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.container.__exit__(*exc)

    def decode(self, *args, **kw):
        return iter(list(self.container.decode(*args, **kw))[: -self.drop])


@pytest.mark.parametrize("size", [None, (32, 24)])
def test_frames_pyav_drops_at_the_end_come_from_decord(clips, monkeypatch, size):
    import av

    path = clips["plain"]
    info = probe(path)
    reference, ref_times, _ = _all_frames(path, info=info, size=size)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: _DropsLastFrames(real_open(*a, **kw), 2))
    frames, times, chunks = _all_frames(path, info=info, chunk_size=8, size=size)
    assert [c.start for c in chunks] == [0, 8, 16, 24] and len(frames) == N
    assert np.abs(frames[:-2].astype(int) - reference[:-2]).max() == 0  # PyAV's own frames
    for k in (N - 2, N - 1):  # decord's: the right frames (scaled from RGB, not from YUV, where size is given)
        errors = np.abs(reference.astype(int) - frames[k]).mean(axis=(1, 2, 3))
        assert errors.argmin() == k and errors[k] < 3.0
    np.testing.assert_allclose(times, ref_times, atol=1e-5)


def test_stream_that_ends_before_decord_can_decode_still_fails(clips, monkeypatch):
    import av

    path = clips["plain"]
    info = probe(path)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: _DropsLastFrames(real_open(*a, **kw), 2))
    monkeypatch.setattr(decode, "_decord_frames", lambda *a: iter(()))  # decord gives nothing either
    with pytest.raises(VideoError) as err:
        _all_frames(path, info=info)
    _assert_one_line(err.value, path, f"cannot decode frame {N - 2} of {N}", "ends early")


def test_short_mpegts_with_b_frames_decodes(tmp_path):
    """decord2 gives nothing for this valid file; iter_chunks falls back to PyAV."""
    import av

    path = tmp_path / "bframes.ts"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "medium"}
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(frame_at(i, W, H), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    info = probe(path)
    frames, times, _ = _all_frames(path, info=info)
    assert len(frames) == info.num_frames == 20
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=1e-4)


def test_decode_backend_explains_the_choice(monkeypatch):
    assert decode_backend("cpu")[0] == "CPU"
    monkeypatch.setattr(decode, "_decord_has_cuda", lambda: False)
    ctx, reason = decode_backend("cuda:1")
    assert ctx == "CPU"
    assert "decord built without CUDA" in reason and "cuda:1" in reason
    with pytest.raises(ValueError):
        decode_backend("tpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_iter_chunks_on_cuda(clips):
    chunks = list(iter_chunks(clips["plain"], device="cuda:0"))
    assert all(c.frames.device.type == "cuda" for c in chunks)
    cpu = torch.cat([c.frames for c in iter_chunks(clips["plain"])])
    assert torch.equal(torch.cat([c.frames for c in chunks]).cpu(), cpu)


# ------------------------------------------------------------------------ prefetch


def _threads(name):
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetch_yields_everything_in_order():
    with prefetch(range(100), depth=3, name="pf-order") as items:
        assert list(items) == list(range(100))
    assert not _threads("pf-order")


def test_prefetch_reraises_the_producers_error_after_its_items():
    def source():
        yield 1
        yield 2
        raise KeyError("boom")

    got = []
    with pytest.raises(KeyError, match="boom"):
        with prefetch(source(), name="pf-error") as items:
            for item in items:
                got.append(item)
    assert got == [1, 2]
    assert not _threads("pf-error")


def test_prefetch_is_bounded():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    with prefetch(source(), depth=2, name="pf-bounded") as items:
        next(items)
        time.sleep(0.2)
        assert len(produced) <= 1 + 2 + 1  # consumed + queued + one being put
    assert not _threads("pf-bounded")


@pytest.mark.parametrize("how", ["break", "exception", "keyboard"])
def test_prefetch_stops_the_producer_when_the_consumer_stops(how):
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    error = {"break": None, "exception": RuntimeError, "keyboard": KeyboardInterrupt}[how]
    try:
        with prefetch(source(), name=f"pf-{how}") as items:
            for item in items:
                if item == 3:
                    if error is None:
                        break
                    raise error("consumer stops")
    except (RuntimeError, KeyboardInterrupt):
        pass
    assert closed.wait(2), "the source generator was not closed"
    assert not _threads(f"pf-{how}")


def test_prefetch_abandoned_without_close_stops():
    items = prefetch(iter(range(10_000)), depth=1, name="pf-abandoned")
    next(items)
    del items
    gc.collect()
    deadline = time.monotonic() + 2
    while _threads("pf-abandoned") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _threads("pf-abandoned")


def test_prefetch_decoded_chunks(clips):
    with prefetch(iter_chunks(clips["plain"], chunk_size=8), name="pf-decode") as chunks:
        assert sum(len(c) for c in chunks) == N
    assert not _threads("pf-decode")
