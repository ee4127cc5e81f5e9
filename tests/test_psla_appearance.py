"""PSLA's parameter-free appearance propagation: patch cosines, the two-sided schedule,
the carried-over fallback and the scene-change promotion rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtag.models.build import DetectOptions, FrameDetector
from vidtag.models.nanodet import load_nanodet
from vidtag.models.preprocess import letterbox
from vidtag.models.psla import PSLAConfig, PSLAVideoDetector, build_psla, patch_cosines, segment_key_frames
from vidtag.ops.sampling import psla_offsets
from vidtag.synth import MotionRanges, synth_clip
from vidtag.types import FrameChunk

APPEARANCE = dict(nonkey_affinity="appearance", use_rfu=False, use_denseft=False)


@pytest.fixture(scope="module")
def nanodet():
    torch.manual_seed(0)
    return load_nanodet(channels_last=True)


def classes(nanodet):
    return tuple(str(i) for i in range(nanodet.config.num_classes))


def photo(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    return blocks.astype(np.uint8)


def panning(t: int, seed: int) -> torch.Tensor:
    ranges = MotionRanges(zoom=(1.1, 1.2), pan=0.1, rotation_deg=0.0, shake_px=0.0, objects=(1, 1))
    return torch.from_numpy(synth_clip(photo(seed), seed, t, (128, 96), others=[photo(seed + 50)], ranges=ranges))


def chunks(frames: torch.Tensor, size: int):
    for s in range(0, len(frames), size):
        part = frames[s : s + size]
        yield FrameChunk(s, part, np.arange(s, s + len(part)) / 25.0)


def detector(nanodet, **config) -> PSLAVideoDetector:
    model = build_psla(nanodet, PSLAConfig(**{**APPEARANCE, "displacement_scaling": "stride", **config}))
    return PSLAVideoDetector(model, classes(nanodet), DetectOptions(conf=0.02, imgsz=128))


def test_patch_cosines_match_a_per_cell_reference():
    torch.manual_seed(1)
    query, key = torch.randn(2, 5, 6, 7), torch.randn(1, 5, 6, 7)
    got = patch_cosines(query, key, 2)

    def patch(x, b, y, xx):
        padded = F.pad(x[b], (1, 1, 1, 1))
        return padded[:, y : y + 3, xx : xx + 3].flatten()

    for b in range(2):
        for k, (dy, dx) in enumerate(psla_offsets(2)):
            for y in range(6):
                for x in range(7):
                    if not (0 <= y + dy < 6 and 0 <= x + dx < 7):
                        assert got[b, k, y, x] == float("-inf")
                        continue
                    want = F.cosine_similarity(patch(query, b, y, x), patch(key, 0, y + dy, x + dx), dim=0)
                    assert abs(float(want) - float(got[b, k, y, x])) < 1e-5


@pytest.mark.parametrize("two_sided", [True, False])
def test_static_clip_gives_the_per_frame_result(nanodet, two_sided):
    """Where nothing moves, the carried-over feature is the frame's own: psla == frame."""
    frames = torch.from_numpy(photo(3)).repeat(12, 1, 1, 1)
    det = detector(nanodet, key_interval=5, two_sided=two_sided)
    got = list(det.run(chunks(frames, 4)))
    want = FrameDetector(nanodet, classes(nanodet), det.options, torch.device("cpu")).detect_frames(frames[:1])[0]
    assert len(want) > 0
    for d in got:
        np.testing.assert_allclose(d.boxes, want.boxes, atol=1e-2)
        np.testing.assert_allclose(d.scores, want.scores, atol=1e-4)


def reference_outputs(det: PSLAVideoDetector, frames: torch.Tensor, keys: list[int], shot_starts: list[int]):
    """Frame by frame: a key frame's own output; any other frame attends to the nearest
    key frame before and after it within its shot (one at a shot's ends)."""
    model = det.model
    x, box = letterbox(frames, det.options.imgsz)
    bounds = [0, *shot_starts, len(frames)]
    shot = lambda i: max(j for j, b in enumerate(bounds[:-1]) if b <= i)  # noqa: E731
    out = []
    with torch.inference_mode():
        memories = {k: model.key_frame(model.low_features(x[k : k + 1]), None)[0] for k in keys}
        for i in range(len(frames)):
            if i in memories:
                output = model.predict(list(memories[i].features))
            else:
                mine = [k for k in keys if shot(k) == shot(i)]
                before, after = [k for k in mine if k < i], [k for k in mine if k > i]
                around = before[-1:] + after[:1]
                output = model.nonkey_output(model.low_features(x[i : i + 1]), [memories[k] for k in around])
            out.append(det.options.postprocess(output, box)[0])
    return out


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)


@pytest.mark.parametrize("t,interval", [(1, 5), (7, 5), (23, 10), (16, 4)])
def test_two_sided_schedule_against_a_frame_by_frame_reference(nanodet, t, interval):
    """Each non-key frame attends to the key frames either side of it (one at the ends)."""
    frames = panning(t, seed=t)
    det = detector(nanodet, key_interval=interval, cut_threshold=0.0)
    got = list(det.run(chunks(frames, 3)))
    keys = [k for _, _, k in segment_key_frames(t, interval)]
    assert det.state.key_frames == keys
    assert det.state.max_pending <= interval
    assert_same(got, reference_outputs(det, frames, keys, []))


def test_two_sided_frames_do_not_cross_a_cut(nanodet):
    frames = torch.cat((panning(8, seed=1), panning(8, seed=2)))  # a hard cut at frame 8
    det = detector(nanodet, key_interval=10, cut_threshold=0.4)
    got = list(det.run(chunks(frames, 5)))
    assert det.shot_starts == [8]
    # segment 0-9 splits at the cut into 0-7 (key 4) and 8-9 (key 9); segment 10-15 has key 13
    assert det.state.key_frames == [4, 9, 13]
    assert_same(got, reference_outputs(det, frames, [4, 9, 13], [8]))


@pytest.mark.parametrize("two_sided", [True, False])
def test_a_scene_change_inside_a_segment_promotes_frames(nanodet, two_sided):
    """Cut detection off: frames 7-9 show another scene than the segment's key frame (5)
    and must run as key frames, giving exactly the per-frame result."""
    frames = torch.cat((panning(7, seed=4), panning(3, seed=9)))
    det = detector(nanodet, key_interval=10, cut_threshold=0.0, promote_below=0.8, two_sided=two_sided)
    got = list(det.run(chunks(frames, 4)))
    assert det.promoted_frames == [7, 8, 9]
    frame_det = FrameDetector(nanodet, classes(nanodet), det.options, torch.device("cpu"))
    want = frame_det.detect_frames(frames[7:])
    for a, b in zip(got[7:], want):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    same_scene = detector(nanodet, key_interval=10, cut_threshold=0.0, promote_below=0.8, two_sided=two_sided)
    list(same_scene.run(chunks(panning(10, seed=4), 4)))
    assert same_scene.promoted_frames == []


@pytest.mark.parametrize("affinity", ["appearance", "memory"])
def test_a_collapsed_confidence_mass_promotes_exactly_those_frames(nanodet, affinity):
    """promote_mass_below: a non-key frame whose output's mass is below the fraction of
    its key frame's runs the whole network (its row becomes the per-frame output); the
    others keep the propagated output."""
    from dataclasses import replace

    from vidtag.models.nanodet import confidence_mass

    config = {**APPEARANCE, "nonkey_affinity": affinity, "promote_mass_below": 0.5}
    model = build_psla(nanodet, PSLAConfig(**config)).eval()
    x, _ = letterbox(panning(4, seed=2), 128)
    with torch.no_grad():
        low = model.low_features(x)
        memory, key_output = model.key_frame(low[:1], None)
        assert memory.mass == pytest.approx(float(confidence_mass(key_output.cls_scores)[0]))
        output = model.predict(model.high_features(None, low[1:]))  # stands in for the propagated output
        scores = output.cls_scores.clone()
        scores[:, :3, 0] = torch.tensor([[0.9, 0.9, 0.9], [0.9, 0.0, 0.0], [0.0, 0.0, 0.0]])  # masses 2.7, 0.9, 0.0 (+ the rest)
        scores[:, 3:] = 0.0
        propagated = replace(output, cls_scores=scores)
        promoted: list[int] = []
        got = model._promote_collapsed(low[1:], propagated, [replace(memory, mass=2.0)], done=set(), promoted=promoted)
    assert promoted == [1, 2]
    torch.testing.assert_close(got.cls_scores[0], scores[0])
    torch.testing.assert_close(got.cls_scores[1:], output.cls_scores[1:])
    torch.testing.assert_close(got.box_dists[1:], output.box_dists[1:])
    with torch.no_grad():
        skipped: list[int] = []
        model._promote_collapsed(low[1:], propagated, [replace(memory, mass=2.0)], done={2}, promoted=skipped)
    assert skipped == [1]
