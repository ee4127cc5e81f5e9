"""The synthetic clip generator: seeded, deterministic, and it really moves."""

from __future__ import annotations

import numpy as np
import pytest

from vidtag.synth import MotionRanges, find_images, load_image, synth_clip


def photo(seed: int = 0, h: int = 120, w: int = 160) -> np.ndarray:
    """A textured test photo: smooth gradients plus random blobs (no flat areas to hide motion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=2)
    img = img + rng.normal(0, 40, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return np.clip(img, 0, 255).astype(np.uint8)


def test_same_seed_same_frames_other_seed_other_frames():
    image, other = photo(0), photo(1)
    a = synth_clip(image, seed=7, num_frames=6, size=(64, 48), others=[other])
    b = synth_clip(image, seed=7, num_frames=6, size=(64, 48), others=[other])
    c = synth_clip(image, seed=8, num_frames=6, size=(64, 48), others=[other])
    assert a.shape == (6, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_camera_moves_smoothly():
    clip = synth_clip(photo(2), seed=3, num_frames=10, size=(64, 48), ranges=MotionRanges(objects=(0, 0), shake_px=0))
    steps = [np.abs(clip[i + 1].astype(int) - clip[i]).mean() for i in range(9)]
    assert min(steps) > 0  # every frame differs from the one before
    # smooth: consecutive frames are closer than the first and last
    assert max(steps) < np.abs(clip[-1].astype(int) - clip[0]).mean()


def test_pasted_objects_move_over_a_still_camera():
    still = MotionRanges(zoom=(1.0, 1.0), pan=0.0, rotation_deg=0.0, shake_px=0.0, objects=(1, 1), object_speed=0.8)
    bare = MotionRanges(zoom=(1.0, 1.0), pan=0.0, rotation_deg=0.0, shake_px=0.0, objects=(0, 0))
    image, other = photo(4), np.full((50, 50, 3), 255, np.uint8)
    with_object = synth_clip(image, seed=5, num_frames=8, size=(64, 48), others=[other], ranges=still)
    background = synth_clip(image, seed=5, num_frames=8, size=(64, 48), ranges=bare)
    assert (background == background[0]).all()  # the camera is still
    changed = [np.argwhere((with_object[i] != background[i]).any(axis=2)) for i in (0, 7)]
    visible = [c for c in changed if len(c)]
    assert visible, "the pasted object never showed"
    if len(visible) == 2:
        assert not np.allclose(visible[0].mean(axis=0), visible[1].mean(axis=0))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        synth_clip(np.zeros((10, 10), np.uint8), seed=0)
    with pytest.raises(ValueError, match="num_frames"):
        synth_clip(photo(), seed=0, num_frames=0)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)
    (tmp_path / "notes.txt").write_text("x")
    assert find_images(tmp_path) == [bad]


def test_write_clip_encodes_frames_that_decode_back(tmp_path):
    from vidtag.io.decode import iter_chunks, probe
    from vidtag.synth import write_clip

    frames = np.zeros((6, 48, 64, 3), np.uint8)
    frames[:, :, :32] = 200  # left half bright
    frames[3:, :24] = 60  # top rows darker from frame 3 on
    path = write_clip(frames, tmp_path / "c.mp4", fps=10)
    info = probe(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (6, 64, 48, 10.0)
    back = np.concatenate([c.frames.numpy() for c in iter_chunks(path, 6)])
    assert np.abs(back.astype(int) - frames).mean() < 6
