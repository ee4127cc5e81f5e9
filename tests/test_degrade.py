"""Degradations, schedules and camera-motion crops (vidtag/degrade.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vidtag import degrade as dg


def scene(h: int = 144, w: int = 192, seed: int = 0) -> np.ndarray:
    """uint8[H, W, 3]: smooth colour blobs with sharp bars, like a busy frame."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (h // 12, w // 12, 3), dtype=np.uint8)
    frame = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)
    frame[::9, :] = 255
    frame[:, ::13] = 0
    return frame


def lap_var(frame: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


DEFAULTS = [(kind, {}) for kind in dg.KINDS]


@pytest.mark.parametrize("shape", [(144, 192, 3), (37, 53, 3), (8, 8, 3)])
@pytest.mark.parametrize("spec", DEFAULTS, ids=dg.KINDS)
def test_shape_dtype_kept_and_input_untouched(spec, shape):
    frame = scene(*shape[:2]) if shape[0] >= 12 else np.full(shape, 100, np.uint8)
    before = frame.copy()
    out = dg.apply(frame, spec)
    assert out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(frame, before)


def test_non_contiguous_frame_is_accepted():
    frame = scene(144, 192)[:, ::-1]
    assert np.array_equal(dg.apply(frame, ("defocus", {})), dg.defocus(np.ascontiguousarray(frame)))


def test_rejects_wrong_frames():
    with pytest.raises(ValueError, match="uint8"):
        dg.noise(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="unknown degradation"):
        dg.apply(scene(), ("fog", {}))


def test_blurs_lower_high_frequencies():
    frame = scene()
    assert lap_var(dg.defocus(frame)) < 0.2 * lap_var(frame)
    assert lap_var(dg.motion_blur(frame, angle_deg=30.0)) < 0.3 * lap_var(frame)
    assert lap_var(dg.defocus(frame, 0.016)) < lap_var(dg.defocus(frame, 0.006))


def test_motion_blur_follows_its_angle():
    frame = scene()
    gray = cv2.cvtColor(dg.motion_blur(frame, angle_deg=0.0, length_frac=0.1), cv2.COLOR_RGB2GRAY).astype(float)
    along = np.abs(np.diff(gray, axis=1)).mean()
    across = np.abs(np.diff(gray, axis=0)).mean()
    assert along < 0.3 * across


@pytest.mark.parametrize("angle", [0.0, 33.0, 90.0, 150.0])
@pytest.mark.parametrize("length_frac", [0.03, 0.06, 0.1])
def test_motion_blur_matches_full_kernel(angle, length_frac):
    frame = scene(160, 200, seed=1)
    ref = cv2.filter2D(frame, -1, dg.line_kernel(length_frac * 160, angle), borderType=cv2.BORDER_REFLECT)
    err = np.abs(dg.motion_blur(frame, angle, length_frac).astype(int) - ref).mean()
    effect = np.abs(frame.astype(int) - ref).mean()
    assert err < 0.15 * effect


@pytest.mark.parametrize("radius_frac", [0.005, 0.012, 0.02, 0.04])
def test_defocus_matches_full_kernel(radius_frac):
    frame = scene(160, 200, seed=2)
    ref = cv2.filter2D(frame, -1, dg.disk_kernel(radius_frac * 160), borderType=cv2.BORDER_REFLECT)
    err = np.abs(dg.defocus(frame, radius_frac).astype(int) - ref).mean()
    effect = np.abs(frame.astype(int) - ref).mean()
    assert err < 0.15 * effect


def test_kernels_sum_to_one_and_are_centred():
    for k in (dg.disk_kernel(3.3), dg.line_kernel(7.5, 20.0), dg.line_kernel(10.0, 135.0)):
        assert abs(k.sum() - 1) < 1e-5 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
        c = k.shape[0] // 2
        assert abs((k * xs).sum() - c) < 1e-4 and abs((k * ys).sum() - c) < 1e-4
    horizontal = dg.line_kernel(6.0, 0.0)
    assert np.allclose(horizontal[horizontal.shape[0] // 2].sum(), 1.0)


def test_noise_raises_high_frequencies_and_keeps_mean():
    flat = np.full((120, 160, 3), 128, np.uint8)
    out = dg.noise(flat, seed=3)
    assert lap_var(out) > 100 * (lap_var(flat) + 1)
    assert abs(out.mean() - 128) < 1.0
    expected_std = np.sqrt(20.0**2 + 2.0 * 128)
    assert abs(out.astype(float).std() - expected_std) < 1.5
    assert np.array_equal(out, dg.noise(flat, seed=3))
    assert not np.array_equal(out, dg.noise(flat, seed=4))


def test_darkness_lowers_mean():
    frame = scene()
    out = dg.darkness(frame, seed=1)
    assert out.mean() < 0.2 * frame.mean()
    assert out.max() < 80
    assert np.array_equal(out, dg.darkness(frame, seed=1))


def test_jpeg_differs_more_at_lower_quality():
    frame = scene()
    err = {q: np.abs(dg.jpeg(frame, q).astype(int) - frame).mean() for q in (5, 50, 95)}
    assert err[5] > err[50] > err[95] > 0
    assert err[5] > 5


@pytest.mark.parametrize("texture_seed", [None, 7])
def test_occluder_covers_its_box(texture_seed):
    frame = scene(200, 300)
    box = (0.3, 0.6, 0.5, 0.55)
    out = dg.occluder(frame, box, color=(250, 0, 250), texture_seed=texture_seed)
    changed = (out != frame).any(axis=2)
    x1, y1, x2, y2 = dg.occluder_rect(frame.shape, box)
    assert (x2 - x1, y2 - y1) == (150, 110)
    assert not changed[:y1].any() and not changed[y2:].any()
    assert not changed[:, :x1].any() and not changed[:, x2:].any()
    assert changed[y1:y2, x1:x2].mean() > 0.9
    if texture_seed is None:
        assert (out[y1:y2, x1:x2] == (250, 0, 250)).all()
    else:
        assert out[y1:y2, x1:x2].std() > 10
        assert np.array_equal(out, dg.occluder(frame, box, texture_seed=texture_seed))


def test_occluder_box_is_shifted_inside_the_frame():
    x1, y1, x2, y2 = dg.occluder_rect((100, 200, 3), (0.95, 0.02, 0.4, 0.5))
    assert (x1, y1, x2, y2) == (120, 0, 200, 50)


# --------------------------------------------------------------------------- schedule


def test_schedule_realises_the_fraction_on_long_videos():
    for seed in range(5):
        schedule = dg.DegradationSchedule.sample(3000, seed)
        assert abs(schedule.mask().mean() - 0.4) < 0.02
    assert abs(dg.DegradationSchedule.sample(3000, 0, fraction=0.15).mask().mean() - 0.15) < 0.02


def test_schedule_bursts_are_consistent_and_apart():
    schedule = dg.DegradationSchedule.sample(2000, 11)
    assert len(schedule) == 2000
    mask = np.zeros(2000, bool)
    previous_stop = -1
    for b in schedule.bursts:
        assert 3 <= b.stop - b.start <= 8
        assert b.start > previous_stop  # at least one clean frame between bursts
        previous_stop = b.stop
        specs = schedule.specs[b.start : b.stop]
        assert all(s.kind == b.kind for s in specs)
        varying = {"seed", "box"}
        fixed = [{k: v for k, v in s.params.items() if k not in varying} for s in specs]
        assert all(f == fixed[0] for f in fixed)
        if b.kind == "occluder":
            boxes = np.array([s.params["box"] for s in specs])
            assert np.all(boxes[:, 2:] == boxes[0, 2:])
            area = boxes[0, 2] * boxes[0, 3]
            assert 0.2 - 1e-9 <= area <= 0.35 + 1e-9 or max(boxes[0, 2:]) >= 0.95
            assert np.abs(np.diff(boxes[:, :2], axis=0)).max() <= 0.02 + 1e-9
            assert (boxes[:, 0] >= boxes[:, 2] / 2 - 1e-9).all() and (boxes[:, 0] <= 1 - boxes[:, 2] / 2 + 1e-9).all()
        if b.kind in ("noise", "darkness"):
            assert len({s.params["seed"] for s in specs}) == len(specs)
        if b.kind == "jpeg":
            assert 5 <= specs[0].params["quality"] <= 10
        mask[b.start : b.stop] = True
    assert np.array_equal(mask, schedule.mask())
    assert all(s == dg.CLEAN for s, m in zip(schedule, mask) if not m)
    assert {b.kind for b in schedule.bursts} == set(dg.KINDS)


def test_schedule_is_deterministic():
    a = dg.DegradationSchedule.sample(500, 42)
    assert a == dg.DegradationSchedule.sample(500, 42)
    assert a != dg.DegradationSchedule.sample(500, 43)
    assert a.mask().tolist() != dg.DegradationSchedule.sample(500, 43).mask().tolist()


def test_schedule_kinds_and_edge_cases():
    only = dg.DegradationSchedule.sample(400, 0, kinds=("jpeg", "noise"))
    assert {b.kind for b in only.bursts} == {"jpeg", "noise"}
    assert dg.DegradationSchedule.sample(100, 0, fraction=0.0).mask().sum() == 0
    assert dg.DegradationSchedule.sample(0, 0).specs == ()
    for n in (1, 2, 5, 8, 16):
        s = dg.DegradationSchedule.sample(n, 3)
        assert len(s) == n
    full = dg.DegradationSchedule.sample(50, 0, fraction=1.0)
    assert full.mask().sum() == 50
    with pytest.raises(ValueError):
        dg.DegradationSchedule.sample(10, 0, kinds=("fog",))
    with pytest.raises(ValueError):
        dg.DegradationSchedule.sample(10, 0, fraction=1.5)


def test_every_scheduled_spec_applies():
    schedule = dg.DegradationSchedule.sample(300, 5)
    frame = scene(72, 96)
    for b in schedule.bursts:
        out = dg.apply(frame, schedule[b.start])
        assert out.shape == frame.shape and not np.array_equal(out, frame)


# --------------------------------------------------------------------------- applying


def test_degrade_frames_streams_the_schedule():
    frames = [scene(48, 64, seed=i) for i in range(30)]
    schedule = dg.DegradationSchedule.sample(30, 1)
    out = list(dg.degrade_frames(iter(frames), schedule))
    for frame, spec, o in zip(frames, schedule, out):
        assert np.array_equal(o, dg.apply(frame, spec))
        assert (spec.kind is None) == np.array_equal(o, frame)
    with pytest.raises(ValueError, match="schedule covers 30"):
        list(dg.degrade_frames(frames + frames[:1], schedule))


def test_degrade_clip_numpy_and_torch_agree():
    clip = np.stack([scene(48, 64, seed=i) for i in range(16)])
    before = clip.copy()
    out, schedule = dg.degrade_clip(clip, seed=9)
    assert out.shape == clip.shape and out.dtype == np.uint8 and np.array_equal(clip, before)
    mask = schedule.mask()
    assert mask.any() and np.array_equal(out[~mask], clip[~mask])
    assert all(not np.array_equal(out[i], clip[i]) for i in np.flatnonzero(mask))
    tensor_out, tensor_schedule = dg.degrade_clip(torch.from_numpy(clip), seed=9)
    assert isinstance(tensor_out, torch.Tensor) and tensor_out.dtype == torch.uint8
    assert tensor_schedule == schedule and np.array_equal(tensor_out.numpy(), out)
    with pytest.raises(ValueError, match="uint8"):
        dg.degrade_clip(clip.astype(np.float32), seed=0)


# --------------------------------------------------------------------------- camera motion


def test_camera_motion_crop_path_is_smooth_and_inside():
    clip = np.stack([scene(96, 128, seed=i) for i in range(12)])
    out, affines = dg.camera_motion_crop(clip, seed=4, max_zoom=1.5, max_pan=0.2)
    assert out.shape == clip.shape and out.dtype == np.uint8
    again, affines_again = dg.camera_motion_crop(torch.from_numpy(clip), seed=4, max_zoom=1.5, max_pan=0.2)
    assert np.array_equal(again.numpy(), out) and np.array_equal(affines_again, affines)
    assert not np.array_equal(dg.camera_motion_crop(clip, seed=5)[1], affines)
    scale = affines[:, 0, 0]
    assert np.allclose(scale, affines[:, 1, 1]) and (scale >= 1 - 1e-6).all() and (scale <= 1.5 + 1e-5).all()
    # the output frame [0, W] x [0, H] comes from inside the source frame
    x0, y0 = -affines[:, 0, 2] / scale, -affines[:, 1, 2] / scale
    assert (x0 >= -1e-3).all() and (x0 + 128 / scale <= 128 + 1e-3).all()
    assert (y0 >= -1e-3).all() and (y0 + 96 / scale <= 96 + 1e-3).all()
    # linear path: constant steps of the crop's centre
    centre = x0 + 64 / scale
    assert np.allclose(np.diff(centre, 2), 0, atol=1e-3)


def test_camera_motion_crop_moves_boxes_with_the_content():
    clip = np.zeros((6, 120, 160, 3), np.uint8)
    box = np.array([[60.0, 40.0, 100.0, 80.0]])
    clip[:, 40:80, 60:100] = 255
    out, affines = dg.camera_motion_crop(clip, seed=2, max_zoom=1.4, max_pan=0.1)
    for frame, affine in zip(out, affines):
        ys, xs = np.nonzero(frame[..., 0] > 127)
        found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.allclose(found, dg.warp_boxes_xyxy(box, affine, 160, 120)[0], atol=1.0)
