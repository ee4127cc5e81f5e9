"""IFF-Net on NanoDet-g: modules, FGFA aggregation against a per-position reference,
the ring buffer, the video detector against a whole-video reference, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.clips import make_clip
from vidtag.models.build import DetectOptions
from vidtag.models.iff import (
    AdvancedIFF,
    BasicIFF,
    FeatureRing,
    IFFConfig,
    IFFVideoDetector,
    build_iff,
    flow_to_level,
    window_indices,
)
from vidtag.models.nanodet import load_nanodet
from vidtag.types import FrameChunk


@pytest.fixture(scope="module")
def nanodet():
    return load_nanodet(channels_last=False)


def _randomise(model, seed=0):
    """Give the fresh modules (whose last flow conv is zero) random weights, so flows are not zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_modules().parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _frames(n, h=64, w=96, seed=0):
    """uint8 [n, h, w, 3]: a camera panning 4 px a frame over a random scene (texture at
    2-px detail on smooth 16-px blobs, so consecutive thumbnails match: no hard cut)."""
    rng = np.random.default_rng(seed)
    blobs = torch.from_numpy(rng.random((1, 3, h // 16 + 1, (w + 4 * n) // 16 + 1), dtype=np.float32))
    blobs = F.interpolate(blobs, size=(h, w + 4 * n), mode="bilinear")[0].permute(1, 2, 0).numpy()
    base = (160 * blobs + rng.integers(0, 95, (h, w + 4 * n, 3))).astype(np.uint8)
    return np.stack([base[:, 4 * i : 4 * i + w] for i in range(n)])


def _chunks(frames, size):
    return [FrameChunk(s, torch.from_numpy(frames[s : s + size]), np.arange(s, min(s + size, len(frames)), dtype=np.float64))
            for s in range(0, len(frames), size)]


def test_config_checks():
    with pytest.raises(ValueError, match="even"):
        IFFConfig(window=5)
    with pytest.raises(ValueError, match="module"):
        IFFConfig(module="fancy")
    assert IFFConfig().radius == 10 and IFFConfig(window=4).radius == 2


def test_advanced_module_has_121_correlation_channels_and_starts_at_zero_flow():
    module = AdvancedIFF(128, 64, 32, 10, 2)
    assert module.corr_conv.in_channels == 121
    a, b = module.encode(torch.randn(1, 128, 12, 16)), module.encode(torch.randn(3, 128, 12, 16))
    assert module(a, b).shape == (3, 2, 12, 16) and module(a, b).abs().max() == 0
    basic = BasicIFF(128, 64)
    assert basic(basic.encode(torch.randn(1, 128, 5, 7)), basic.encode(torch.randn(2, 128, 5, 7))).abs().max() == 0


def test_flow_to_level_rescales_values_with_the_grid():
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0  # one cell right at stride 16
    fine = flow_to_level(flow, (8, 12), 2.0)
    coarse = flow_to_level(flow, (2, 3), 0.5)
    assert fine.shape == (1, 2, 8, 12) and torch.allclose(fine[:, 0], torch.full((1, 8, 12), 2.0)) and fine[:, 1].abs().max() == 0
    assert torch.allclose(coarse[:, 0], torch.full((1, 2, 3), 0.5))


def test_window_zero_is_the_per_frame_detector(nanodet):
    model = _randomise(build_iff(nanodet, IFFConfig(window=0)))
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        out = model.predict(model.aggregate(ff.select([1]), ff.select([])).features)
        ref = nanodet(x[1:2])
    torch.testing.assert_close(out.cls_scores, ref.cls_scores)
    torch.testing.assert_close(out.box_dists, ref.box_dists)


def test_fresh_modules_on_a_still_scene_give_the_per_frame_detector(nanodet):
    model = build_iff(nanodet)  # zero flow; every neighbour equals the current frame
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        agg = model.aggregate(ff, ff.select([0, 0, 0, 0]))
        out = model.predict(agg.features)
    torch.testing.assert_close(out.cls_scores, nanodet(x).cls_scores, atol=1e-5, rtol=1e-5)
    assert all(torch.allclose(w.sum(0), torch.ones_like(w[0])) for w in agg.weights)


def _reference_aggregate(model, current, neighbours, flows, scale=1.0):
    """Per position and per frame: bilinear sample by hand, cosine (times ``scale``), softmax, weighted sum."""
    c = current.channels
    out = []
    for level, (mine, theirs) in enumerate(zip(current.levels, neighbours.levels)):
        _, ch, h, w = theirs.shape
        n = theirs.shape[0]
        result = torch.zeros(1, c, h, w, dtype=torch.float64)
        for y in range(h):
            for x in range(w):
                samples = []
                for j in range(n):
                    u, v = flows[level][j, 0, y, x].item(), flows[level][j, 1, y, x].item()
                    sx, sy = x + u, y + v
                    x0, y0 = math.floor(sx), math.floor(sy)
                    value = torch.zeros(ch, dtype=torch.float64)
                    for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                        for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                            if 0 <= yy < h and 0 <= xx < w:
                                value += wy * wx * theirs[j, :, yy, xx].double()
                    samples.append(value)
                emb_i = mine[0, c:, y, x].double()
                sims = [emb_i.dot(emb_i)] + [emb_i.dot(s[c:]) / s[c:].norm().clamp(min=1e-8) for s in samples]
                weights = (torch.stack(sims) * scale).softmax(0)
                feats = [mine[0, :c, y, x].double()] + [s[:c] for s in samples]
                result[0, :, y, x] = sum(wk * fk for wk, fk in zip(weights, feats))
        out.append(result)
    return out


def test_aggregation_equals_a_per_position_reference(nanodet):
    model = _randomise(build_iff(nanodet), seed=3)
    model.iff.flow.bias.data = torch.tensor([0.7, -1.3])  # flows of a few cells, fractional
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        current, neighbours = ff.select([1]), ff.select([0, 2, 2])  # a repeat counts twice
        agg = model.aggregate(current, neighbours)
    assert agg.flow.abs().max() > 0.5
    ref = _reference_aggregate(model, current, neighbours, agg.flows)
    for fast, slow in zip(agg.features, ref):
        torch.testing.assert_close(fast.double(), slow, atol=1e-4, rtol=1e-4)


def test_neighbour_counts_weigh_as_repeats(nanodet):
    """A neighbour with count k aggregates exactly as k copies of it (what training's match_window relies on)."""
    model = _randomise(build_iff(nanodet, IFFConfig(learn_temperature=True)), seed=4)
    model.temperature.log_scale.data = torch.tensor(math.log(2.5))
    model.iff.flow.bias.data = torch.tensor([-0.4, 1.1])
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        counted = model.aggregate(ff.select([1]), ff.select([0, 2]), torch.tensor([3.0, 2.0]))
        repeated = model.aggregate(ff.select([1]), ff.select([0, 0, 0, 2, 2]))
        plain = model.aggregate(ff.select([1]), ff.select([0, 2]))
    for a, b, c in zip(counted.features, repeated.features, plain.features):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert (a - c).abs().max() > 1e-3  # the counts change the result
    for w_counted, w_repeated in zip(counted.weights, repeated.weights):
        torch.testing.assert_close(w_counted[0], w_repeated[0], atol=1e-6, rtol=1e-5)  # the current frame's share
        torch.testing.assert_close(w_counted[1], w_repeated[1:4].sum(0), atol=1e-6, rtol=1e-5)


def test_learned_temperature_scales_the_cosines_and_is_saved(nanodet, tmp_path):
    model = _randomise(build_iff(nanodet, IFFConfig(learn_temperature=True, window=2)), seed=5)
    model.temperature.log_scale.data = torch.tensor(math.log(3.0))
    model.iff.flow.bias.data = torch.tensor([0.3, 0.6])
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        current, neighbours = ff.select([1]), ff.select([0, 2])
        agg = model.aggregate(current, neighbours)
    for fast, slow in zip(agg.features, _reference_aggregate(model, current, neighbours, agg.flows, scale=3.0)):
        torch.testing.assert_close(fast.double(), slow, atol=1e-4, rtol=1e-4)
    model.save_modules(tmp_path / "t.pt")
    again = build_iff(nanodet, IFFConfig(learn_temperature=True))
    again.load_modules(tmp_path / "t.pt")
    assert math.isclose(float(again.temperature.log_scale.detach().exp()), 3.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="learn_temperature"):
        build_iff(nanodet, IFFConfig()).load_modules(tmp_path / "t.pt")


def test_aggregation_gradients_reach_the_modules(nanodet):
    model = _randomise(build_iff(nanodet), seed=1)
    x = torch.randn(3, 3, 64, 96)
    ff = model.frame_features(x)
    agg = model.aggregate(ff.select([1]), ff.select([0, 2]))
    model.predict(agg.features).cls_scores.sum().backward()
    grads = {name: p.grad for name, p in model.trainable_modules().named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["iff.flow.weight"].abs().sum() > 0 and grads["embeddings.0.layers.0.weight"].abs().sum() > 0
    assert not any(p.requires_grad for p in model.detector.parameters())


def test_window_indices_repeat_the_ends():
    assert window_indices(0, 10, 2) == [0, 0, 1, 2]
    assert window_indices(9, 10, 2) == [7, 8, 9, 9]
    assert window_indices(5, 10, 2) == [3, 4, 6, 7]
    assert window_indices(0, 1, 3) == [0] * 6
    assert window_indices(10, 30, 10, step=5) == [0, 5, 15, 20]
    assert window_indices(1, 30, 4, step=2) == [0, 0, 3, 5]


def test_ring_keeps_only_its_capacity(nanodet):
    model = build_iff(nanodet)
    with torch.no_grad():
        ff = model.frame_features(torch.randn(6, 3, 64, 96))
    ring = FeatureRing(3)
    for row in range(6):
        ring.push(ff, row)
    assert ring.storage.levels[0].shape[0] == 3 and ring.oldest == 3
    torch.testing.assert_close(ring.gather([5, 3]).levels[1], ff.select([5, 3]).levels[1])
    with pytest.raises(KeyError, match="not in the ring"):
        ring.gather([2])
    with pytest.raises(KeyError):
        ring.gather([6])


def test_ring_completes_neck_only_frames_when_gathered(nanodet):
    """push_neck + gather gives what frame_features gives; each frame's per-frame modules
    run once, and only for frames a gather asked for."""
    model = _randomise(build_iff(nanodet), seed=4)
    with torch.no_grad():
        x = torch.randn(6, 3, 64, 96)
        eager = model.frame_features(x)
        ring = FeatureRing(4, model.per_frame_modules)
        for row in range(6):
            ring.push_neck(eager.features, row)
        assert ring.completed == 0
        got = ring.gather([4, 2, 4])
        assert ring.completed == 2  # frames 2 and 4; 3 and 5 not asked for
        for a, b in zip(got.levels + [got.encoded], eager.select([4, 2, 4]).levels + [eager.select([4, 2, 4]).encoded]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        ring.gather([2, 3, 4, 5])
        assert ring.completed == 4
    with pytest.raises(ValueError, match="per_frame"):
        FeatureRing(3).push_neck(eager.features)


def _fuse_cells_loop(own, aggregated):
    """fuse_by_cell written as a loop over one frame's cells."""
    from vidtag.models.nanodet import NanoDetOutput

    cls, dist = aggregated.cls_scores.clone(), aggregated.box_dists.clone()
    for n in range(cls.shape[1]):
        if float(own.cls_scores[0, n].max()) >= float(aggregated.cls_scores[0, n].max()):
            cls[0, n], dist[0, n] = own.cls_scores[0, n], own.box_dists[0, n]
    return NanoDetOutput(cls, dist, aggregated.level_shapes, aggregated.strides)


def _whole_video_reference(model, frames, imgsz, shots=None, gate_score=0.3):
    """Every frame's features at once, then each frame aggregated over window_indices
    (within its shot: ``shots`` lists (first, end) frame ranges), each neighbour whose
    thumbnail NCC with the frame is below ``lookalike_threshold`` replaced by the frame
    (plain loops): no ring, no streaming.  With ``clean_gate``, a frame whose mass (the
    sum of its cells' best class scores >= ``gate_score``) is at least the gate times
    the median over the frame and its neighbours keeps its own detections, and so does
    one whose aggregated output has less mass than its own (``fusion="frame"``), or
    takes cell by cell the more confident output (``fusion="cells"``)."""
    from vidtag.models.nanodet import postprocess
    from vidtag.models.preprocess import letterbox
    from vidtag.shots import frame_thumbnails

    x, box = letterbox(torch.from_numpy(frames), imgsz)
    thumbs = frame_thumbnails(x, box, imgsz)
    shots = shots or [(0, len(frames))]
    with torch.no_grad():
        ff = model.frame_features(x)
        dets = []
        for t in range(len(frames)):
            first, end = next((a, b) for a, b in shots if a <= t < b)
            step = max(1, min(model.config.window_step, model.config.radius))
            neighbours = window_indices(t, end, model.config.radius, first, step)
            counts = None if step == 1 else torch.full((len(neighbours),), model.config.window / len(neighbours))
            threshold = model.config.lookalike_threshold
            if threshold > 0:
                neighbours = [j if float(torch.dot(thumbs[j], thumbs[t])) >= threshold else t for j in neighbours]
            out = model.predict(model.aggregate(ff.select([t]), ff.select(neighbours), counts).features)
            carried = None
            if model.config.clean_gate > 0:
                def mass(output):
                    return sum(float(v) for v in output.cls_scores[0].max(dim=-1).values if v >= gate_score)

                def alone(j):
                    return model.predict(ff.select([j]).features)

                own = alone(t)
                window = sorted(mass(alone(j)) for j in [t] + neighbours)
                median = (window[(len(window) - 1) // 2] + window[len(window) // 2]) / 2
                clean = model.config.clean_gate * median
                if mass(own) >= clean:
                    out = own
                elif model.config.fusion == "cells":
                    out = _fuse_cells_loop(own, out)
                elif mass(out) < mass(own):
                    out = own
                if mass(own) < clean and model.config.carry:
                    r = model.config.radius
                    before = [j for j in range(max(first, t - r), t) if mass(alone(j)) >= clean]
                    after = [j for j in range(t + 1, min(end, t + r + 1)) if mass(alone(j)) >= clean]
                    if before and after:
                        a, b = before[-1], after[0]
                        carried = _carry_loop(*(postprocess(alone(j), box, conf_threshold=0.05, iou_threshold=0.6, max_det=100)[0]
                                                for j in (a, b)), (t - a) / (b - a))
            frame = postprocess(out, box, conf_threshold=0.05, iou_threshold=0.6, max_det=100)[0]
            dets.append(frame if carried is None else _add_unseen_loop(frame, carried))
    return dets


def _box_iou_loop(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _carry_loop(before, after, u, min_iou=0.3):
    """Plain loops: pair same-label boxes of the frames before and after, largest IoU
    (>= min_iou) first, and place each pair at fraction u, scored by the lower score."""
    from vidtag.types import Detections

    boxes, scores, labels, used_i, used_j = [], [], [], set(), set()
    while True:
        best = None
        for i in range(len(before)):
            for j in range(len(after)):
                if i not in used_i and j not in used_j and before.labels[i] == after.labels[j]:
                    v = _box_iou_loop(before.boxes[i].tolist(), after.boxes[j].tolist())
                    if v >= min_iou and (best is None or v > best[0]):
                        best = (v, i, j)
        if best is None:
            return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(labels, np.int64))
        _, i, j = best
        used_i.add(i)
        used_j.add(j)
        boxes.append([(1 - u) * float(p) + u * float(q) for p, q in zip(before.boxes[i], after.boxes[j])])
        scores.append(min(float(before.scores[i]), float(after.scores[j])))
        labels.append(int(before.labels[i]))


def _add_unseen_loop(frame, carried, seen_iou=0.5):
    from vidtag.types import Detections

    keep = [k for k in range(len(carried))
            if not any(frame.labels[n] == carried.labels[k] and _box_iou_loop(frame.boxes[n].tolist(), carried.boxes[k].tolist()) >= seen_iou
                       for n in range(len(frame)))]
    return Detections(np.concatenate([frame.boxes, carried.boxes[keep]]), np.concatenate([frame.scores, carried.scores[keep]]),
                      np.concatenate([frame.labels, carried.labels[keep]]))


@pytest.mark.parametrize("window,chunk,step", [(4, 3, 1), (6, 8, 1), (0, 5, 1), (8, 3, 2), (6, 4, 3)])
def test_video_detector_equals_the_whole_video_reference(nanodet, window, chunk, step):
    model = _randomise(build_iff(nanodet, IFFConfig(window=window, window_step=step)), seed=2)
    model.iff.flow.bias.data = torch.tensor([0.5, 0.25])
    frames = _frames(11)
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    dets = list(detector.run(_chunks(frames, chunk)))
    ref = _whole_video_reference(model, frames, 96)
    assert len(dets) == len(ref) == 11
    assert sum(len(d) for d in ref) > 0
    for d, r in zip(dets, ref):
        np.testing.assert_allclose(d.boxes, r.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, r.scores, atol=1e-5)
    assert detector.ring.storage.levels[0].shape[0] == window + 1  # bounded by the window, not the 11 frames


def _transition(kind: str) -> np.ndarray:
    """14 frames of two panning scenes joined without a hard cut: ``dissolve`` (frames
    5-8 blend A into B), ``fade`` (A fades to black over frames 5-6, B fades in over
    7-8), ``flash`` (one scene, frame 7 nearly white)."""
    a, b = _frames(14, seed=4), _frames(14, seed=5)
    if kind == "flash":
        out = a.copy()
        out[7] = np.clip(out[7].astype(int) + 240, 0, 255)
        return out
    weights = {"dissolve": [1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0, 0],
               "fade": [1, 1, 1, 1, 1, 0.5, 0.05, -0.05, -0.5, -1, -1, -1, -1, -1]}[kind]
    frames = []
    for i, w in enumerate(weights):
        if kind == "dissolve":
            frames.append(w * a[i] + (1 - w) * b[i])
        else:  # fade: positive weights show A at that brightness, negative ones B
            frames.append(w * a[i] if w >= 0 else -w * b[i])
    return np.stack(frames).round().astype(np.uint8)


def test_a_fade_through_black_splits_the_shots(nanodet):
    """Near-black frames correlate with nothing: the cut test splits a fade between the scenes."""
    model = build_iff(nanodet, IFFConfig(window=6))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    list(detector.run(_chunks(_transition("fade"), 4)))
    assert detector.shots.starts and all(6 <= s <= 8 for s in detector.shots.starts)


@pytest.mark.parametrize("kind", ["dissolve", "flash"])
def test_windows_do_not_mix_frames_across_gradual_transitions(nanodet, kind):
    """No cut is found in a dissolve or a fade, yet no window mixes the two scenes (nor a
    flash with its neighbours): the neighbours that do not look like the frame are replaced
    by it.  Checked against the whole-video reference, which applies the same rule in plain loops."""
    from vidtag.models.preprocess import letterbox
    from vidtag.shots import frame_thumbnails

    model = _randomise(build_iff(nanodet, IFFConfig(window=6)), seed=4)
    frames = _transition(kind)
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    dets = list(detector.run(_chunks(frames, 4)))
    thumbs = frame_thumbnails(*letterbox(torch.from_numpy(frames), 96), 96)
    if kind == "flash":
        assert max(abs(float(thumbs[j] @ thumbs[7])) for j in (5, 6, 8, 9)) < 0.2
    else:
        assert float(thumbs[1] @ thumbs[12]) < 0.2  # the two scenes do not look alike
        assert detector.shots.starts == []  # but the cut test sees no cut
    assert detector.replaced > 0
    bounds = [0, *detector.shots.starts, len(frames)]  # a flash may also be taken for cuts
    shots = list(zip(bounds, bounds[1:]))
    ref = _whole_video_reference(model, frames, 96, shots=shots)
    for d, r in zip(dets, ref, strict=True):
        np.testing.assert_allclose(d.boxes, r.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, r.scores, atol=1e-5)
    model.configure(lookalike_threshold=0.0)
    mixed = _whole_video_reference(model, frames, 96, shots=shots)
    assert any(len(m) != len(d) or not np.allclose(m.scores, d.scores, atol=1e-4) for m, d in zip(mixed, dets))


@pytest.mark.parametrize("chunk", [3, 4, 11])
def test_windows_stop_at_a_hard_cut(nanodet, chunk):
    """Two scenes: each frame aggregates only frames of its own shot, the shot's ends repeated."""
    model = _randomise(build_iff(nanodet, IFFConfig(window=4)), seed=3)
    frames = np.concatenate((_frames(6, seed=0), _frames(5, seed=1)))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    dets = list(detector.run(_chunks(frames, chunk)))
    assert detector.shots.starts == [6]
    ref = _whole_video_reference(model, frames, 96, shots=[(0, 6), (6, 11)])
    assert sum(len(d) for d in ref) > 0
    for d, r in zip(dets, ref, strict=True):
        np.testing.assert_allclose(d.boxes, r.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, r.scores, atol=1e-5)
    across = _whole_video_reference(model, frames, 96)  # what the cut changes: frames 4-7 see the other scene
    assert any(len(a) != len(d) or not np.allclose(a.scores, d.scores, atol=1e-4) for a, d in zip(across[4:8], dets[4:8]))
    model.configure(cut_threshold=0.0)
    assert list(detector.run(_chunks(frames, chunk))) and detector.shots.starts == []
    assert window_indices(7, 11, 2, first=6) == [6, 6, 8, 9]


def test_short_video_shorter_than_the_window(nanodet):
    model = build_iff(nanodet, IFFConfig(window=20))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    assert len(list(detector.run(_chunks(_frames(3), 2)))) == 3
    assert list(detector.run([])) == []


def test_modules_round_trip_and_refuse_another_shape(nanodet, tmp_path):
    model = _randomise(build_iff(nanodet, IFFConfig(module="basic")))
    model.save_modules(tmp_path / "m.pt")
    again = build_iff(nanodet, IFFConfig(module="basic"))
    again.load_modules(tmp_path / "m.pt")
    for k, v in again.trainable_modules().state_dict().items():
        assert torch.equal(v, model.trainable_modules().state_dict()[k]), k
    with pytest.raises(ValueError, match="module='basic'"):
        build_iff(nanodet, IFFConfig(module="advanced")).load_modules(tmp_path / "m.pt")


# --- training -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("iff") / "clip.mp4", n_frames=30, width=64, height=48)


def test_sample_window_clip_draws_distinct_neighbours_in_reach():
    from vidtag.train.data import MAX_TRAIN_SEED
    from vidtag.train.iff import sample_window_clip

    rng = np.random.default_rng(0)
    for _ in range(200):
        clip = sample_window_clip(rng, [30, 5], radius=10, count=2)
        n = 30 if clip.video == 0 else 5
        assert len(set(clip.neighbours)) == len(clip.neighbours) == 2 and clip.current not in clip.neighbours
        assert all(0 <= j < n and abs(j - clip.current) <= 10 for j in clip.neighbours)
        assert clip.crop_seed < MAX_TRAIN_SEED and clip.degrade_seed < MAX_TRAIN_SEED
    a = [sample_window_clip(np.random.default_rng(5), [30]) for _ in range(2)]
    assert a[0] == a[1]


def test_trl_is_zero_when_aligned_and_smooth_l1_otherwise():
    from vidtag.train.losses import transformation_residual_loss

    f = torch.randn(1, 4, 3, 5)
    assert transformation_residual_loss([f.repeat(2, 1, 1, 1)], [f]) == 0
    d = torch.tensor([0.5, 2.0]).reshape(1, 2, 1, 1)
    value = transformation_residual_loss([d], [torch.zeros(1, 2, 1, 1)])
    assert math.isclose(float(value), (0.5 * 0.5**2 + (2.0 - 0.5)) / 2, rel_tol=1e-6)


def _tiny(clip_path, **overrides):
    from vidtag.train.iff import IFFTrainConfig

    values = dict(videos=(str(clip_path),), frames=((0, 24),), imgsz=64, steps=3, batch=1, seed=7, log_every=1, warmup_steps=1)
    values.update(overrides)
    return IFFTrainConfig(**values)


def test_tiny_iff_run_trains_only_the_new_modules_and_is_seeded(nanodet, clip_path, tmp_path):
    from vidtag.train.iff import train_iff
    from vidtag.train.loop import write_manifest

    before = {k: v.clone() for k, v in nanodet.state_dict().items()}
    cfg = _tiny(clip_path, checkpoint=str(tmp_path / "iff.pt"))
    logs = []
    result = train_iff(cfg, on_log=logs.append, detector=nanodet)
    assert result.steps == 3 and len(logs) == 3 and all(r["trl"] > 0 and math.isfinite(r["total"]) for r in result.history)
    for k, v in nanodet.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert result.model.iff.flow.weight.abs().sum() > 0  # the zero-initialised flow conv moved
    again = train_iff(cfg, detector=nanodet)
    assert [r["total"] for r in again.history] == [r["total"] for r in result.history]
    no_trl = train_iff(_tiny(clip_path, iff=IFFConfig(trl_weight=0.0)), detector=nanodet)
    row = no_trl.history[0]
    assert math.isclose(row["total"], row["cls"] + 0.25 * row["box"] + 0.5 * row["feature"], rel_tol=1e-5)
    manifest = json.loads(write_manifest(result, cfg, tmp_path / "iff.pt", "iff-test", "pytest").read_text())
    assert manifest["iff_config"]["module"] == "advanced" and manifest["training"]["steps"] == 3
    assert "IFFDetector.load_modules" in manifest["format"]


@pytest.mark.parametrize("match_window, window, expected", [(True, 20, [10.0, 10.0]), (True, 6, [3.0, 3.0]), (False, 20, None)])
def test_match_window_gives_each_drawn_neighbour_its_share_of_the_window(nanodet, clip_path, match_window, window, expected):
    from vidtag.models.iff import IFFDetector
    from vidtag.train.data import load_frames
    from vidtag.train.iff import build_iff_student, sample_window_clip, window_clip_loss

    cfg = _tiny(clip_path, match_window=match_window, iff=IFFConfig(window=window))
    model = build_iff_student(cfg, nanodet)
    seen = []

    def recording(self, current, neighbours, counts=None):
        seen.append(None if counts is None else counts.tolist())
        return IFFDetector.aggregate(self, current, neighbours, counts)

    model.aggregate = recording.__get__(model)
    videos = [load_frames(str(clip_path), 0, 24, 64)]
    clip = sample_window_clip(np.random.default_rng(0), [24], radius=window // 2)
    parts = window_clip_loss(model, clip, videos, cfg)
    assert seen == [expected] and bool(torch.isfinite(parts["total"].detach()))


def test_labelled_iff_training_uses_the_detection_loss(nanodet, clip_path, tmp_path):
    from tests.test_train import _cocovid
    from vidtag.train.iff import train_iff

    labels = _cocovid(tmp_path / "gt.json", "clip", 24, [(8, 6, 20, 30)])
    result = train_iff(_tiny(clip_path, labels=str(labels)), detector=nanodet)
    assert all(r["giou"] > 0 and r["feature"] == 0 and r["trl"] > 0 for r in result.history)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(nanodet):
    cpu_model = _randomise(build_iff(nanodet, IFFConfig(window=4)), seed=4)
    cpu_model.iff.flow.bias.data = torch.tensor([0.5, -0.25])
    gpu_model = build_iff(load_nanodet(device="cuda"), IFFConfig(window=4))
    gpu_model.trainable_modules().load_state_dict(cpu_model.trainable_modules().state_dict())
    frames = _frames(7)
    options = DetectOptions(conf=0.05, imgsz=96)
    cpu = list(IFFVideoDetector(cpu_model, ("x",) * 80, options).run(_chunks(frames, 4)))
    gpu = list(IFFVideoDetector(gpu_model, ("x",) * 80, options, "cuda").run(_chunks(frames, 4)))
    for a, b in zip(cpu, gpu):
        keep = a.scores > 0.1  # near-threshold boxes may flip between devices
        for box, score, label in zip(a.boxes[keep], a.scores[keep], a.labels[keep]):
            same = (b.labels == label) & (np.abs(b.boxes - box).max(axis=1) < 0.5)
            assert same.any() and np.abs(b.scores[same] - score).min() < 1e-3


def test_shipped_modules_load_and_run(tmp_path):
    from vidtag.api import Runner, Settings

    video = make_clip(tmp_path / "v.mp4", n_frames=9, width=96, height=64)
    for module in ("advanced", "basic"):
        runner = Runner(Settings(method="iff", iff_module=module, window=4, imgsz=96, device="cpu", link="none"))
        assert runner.detector.model.config.module == module and runner.detector.model.config.window == 4
        result = runner.detect(video)
        assert len(result.detections) == 9
    with pytest.raises(ValueError, match="even"):
        Runner(Settings(method="iff", window=3, imgsz=96, device="cpu"))
    shipped = json.loads((Path(__file__).parents[1] / "weights" / "iff-nanodet-g.json").read_text())["inference"]["config"]
    default = Runner(Settings(method="iff", imgsz=96, device="cpu", link="none")).detector.model.config
    assert default.clean_gate == shipped.get("clean_gate", 0.0) and default.self_prior == shipped.get("self_prior", 0.0)
    off = Runner(Settings(method="iff", clean_gate=0.0, imgsz=96, device="cpu", link="none"))
    assert off.detector.model.config.clean_gate == 0.0
    assert off.settings.output_options(off.manifest)["clean_gate"] == 0.0
    assert default.carry == shipped.get("carry", False)
    for carry in (False, True):
        runner = Runner(Settings(method="iff", carry=carry, imgsz=96, device="cpu", link="none"))
        assert runner.detector.model.config.carry is carry and runner.settings.output_options(runner.manifest)["carry"] is carry


def test_self_prior_raises_the_current_frames_weight_by_exactly_its_logit(nanodet):
    """weight' of the frame = w e^p / (w e^p + 1 - w) at every position; the output moves towards its own features."""
    from vidtag.models.preprocess import letterbox

    model = _randomise(build_iff(nanodet, IFFConfig(window=4, learn_temperature=True)), seed=6)
    x, _ = letterbox(torch.from_numpy(_frames(5)), 96)
    with torch.no_grad():
        ff = model.frame_features(x)
        plain = model.aggregate(ff.select([2]), ff.select([0, 1, 3, 4]))
        model.configure(self_prior=2.0)
        shifted = model.aggregate(ff.select([2]), ff.select([0, 1, 3, 4]))
    for w, v in zip(plain.weights, shifted.weights):
        expected = w[0] * np.exp(2.0) / (w[0] * np.exp(2.0) + 1 - w[0])
        torch.testing.assert_close(v[0], expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(v.sum(dim=0), torch.ones_like(v[0]), rtol=1e-5, atol=1e-5)
    own = ff.select([2]).features
    for a, b, mine in zip(plain.features, shifted.features, own):
        assert (b - mine).abs().mean() < (a - mine).abs().mean()


def _gated_detector(nanodet, frames, window, gate_score):
    """An IFF video detector whose clean gate sits at the median of the frames' mass
    ratios (mass / the window's median, ends not repeated), so that both branches run."""
    from vidtag.models.nanodet import confidence_mass
    from vidtag.models.preprocess import letterbox

    model = build_iff(nanodet, IFFConfig(window=window))
    model.iff.flow.bias.data = torch.tensor([0.5, 0.25])  # a constant flow: warps that interpolate
    x, _ = letterbox(torch.from_numpy(frames), 96)
    with torch.no_grad():
        masses = confidence_mass(model.predict(model.frame_features(x).features).cls_scores, gate_score)
    radius = window // 2
    ratios = [float(masses[t] / masses[max(0, t - radius) : t + radius + 1].median()) for t in range(len(frames))]
    model.configure(clean_gate=float(np.median(ratios)))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    detector.gate_score = gate_score
    return detector


@pytest.mark.parametrize("chunk,fusion,carry", [(3, "frame", False), (8, "frame", False), (3, "cells", False), (8, "cells", False),
                                                 (3, "frame", True), (8, "cells", True)])
def test_clean_gate_equals_the_whole_video_reference(nanodet, chunk, fusion, carry):
    frames = _frames(13, seed=3)
    frames[5:8] = (frames[5:8] * 0.3).astype(np.uint8)  # a dark stretch
    detector = _gated_detector(nanodet, frames, 4, gate_score=0.01)
    detector.model.configure(fusion=fusion, carry=carry)
    dets = list(detector.run(_chunks(frames, chunk)))
    ref = _whole_video_reference(detector.model, frames, 96, gate_score=0.01)
    assert 0 < len(detector.own_frames) < len(frames)  # both branches ran
    if carry:
        assert detector.carried_from  # some frame took boxes from its clean neighbours
        detector.model.configure(carry=False)
        plain = list(detector.run(_chunks(frames, chunk)))
        assert sum(map(len, dets)) > sum(map(len, plain))  # and kept boxes it did not have
    for d, r in zip(dets, ref, strict=True):
        np.testing.assert_allclose(d.boxes, r.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, r.scores, atol=1e-5)


def test_carry_takes_boxes_from_the_nearest_clean_frames_of_the_shot(nanodet):
    """Frame 3 goes dark among clean frames: it takes the boxes frames 2 and 4 both see,
    and the result is the plain-loop reference's."""
    frames = _frames(9, seed=0)
    frames[3] = (frames[3] * 0.05).astype(np.uint8)
    model = build_iff(nanodet, IFFConfig(window=4, clean_gate=0.9, carry=True))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    detector.gate_score = 0.01
    dets = list(detector.run(_chunks(frames, 4)))
    assert detector.carried_from == {3: (2, 4)}
    ref = _whole_video_reference(model, frames, 96, gate_score=0.01)
    for d, r in zip(dets, ref, strict=True):
        np.testing.assert_allclose(d.boxes, r.boxes, atol=1e-3)
        np.testing.assert_allclose(d.scores, r.scores, atol=1e-5)


def test_carry_never_takes_boxes_across_a_cut(nanodet):
    """Frames 6 and 7 start a shot and are dark; frames 5 (the last of the shot before)
    and 8 are clean and see the same box.  Within its shot, frame 7 has no clean frame
    before it: it takes nothing.  Were the cut not there, it would take the box."""
    from vidtag.models.iff import OwnOutput
    from vidtag.types import Detections

    detector = IFFVideoDetector(build_iff(nanodet, IFFConfig(window=4, clean_gate=0.9, carry=True)), ("x",) * 80,
                                DetectOptions(conf=0.05, imgsz=96))
    seen = Detections(np.array([[10, 10, 30, 30]], np.float32), np.array([0.8], np.float32), np.array([0]))
    detector.own = {j: OwnOutput(1.0 if j in (5, 8) else 0.1, seen if j in (5, 8) else Detections.empty(), None) for j in range(4, 10)}
    assert len(detector._carry(7, Detections.empty(), 0.9, first=6, end=11)) == 0 and detector.carried_from == {}
    carried = detector._carry(7, Detections.empty(), 0.9, first=0, end=11)
    assert detector.carried_from == {7: (5, 8)}
    np.testing.assert_allclose(carried.boxes, seen.boxes)


def test_clean_gate_gives_the_per_frame_detector_on_frames_it_keeps(nanodet):
    from vidtag.models.build import FrameDetector

    frames = _frames(9, seed=5)
    detector = _gated_detector(nanodet, frames, 4, gate_score=0.01)
    dets = list(detector.run(_chunks(frames, 4)))
    plain = list(FrameDetector(nanodet, ("x",) * 80, detector.options, torch.device("cpu")).run(_chunks(frames, 4)))
    assert detector.own_frames
    for t in detector.own_frames:
        np.testing.assert_array_equal(dets[t].boxes, plain[t].boxes)
        np.testing.assert_array_equal(dets[t].scores, plain[t].scores)


def test_clean_gate_keeps_every_frame_of_a_still_clip_and_not_a_frame_that_went_dark(nanodet):
    """One repeated frame: every mass equals its window's largest, so every frame keeps
    its own detections.  Frame 3 nearly black: the detector sees less there than in
    its neighbours, so frame 3 alone is aggregated, and keeps the aggregated output,
    which sees more than the dark frame."""
    still = np.repeat(_frames(1, seed=7), 7, axis=0)
    model = build_iff(nanodet, IFFConfig(window=4, clean_gate=0.9))
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    detector.gate_score = 0.01
    list(detector.run(_chunks(still, 3)))
    assert detector.own_frames == list(range(7))
    assert detector.ring.completed == 0  # no window was gathered: no frame paid for the per-frame modules
    still[3] = (still[3] * 0.05).astype(np.uint8)
    list(detector.run(_chunks(still, 3)))
    assert detector.own_frames == [0, 1, 2, 4, 5, 6]
    assert detector.ring.completed == 5  # frame 3 and its window, frames 1-5
    assert detector.own_weight[3] < 1 and all(detector.own_weight[t] == 1 for t in detector.own_frames)


def test_fuse_by_cell_takes_each_cell_from_the_more_confident_output():
    from vidtag.models.iff import fuse_by_cell
    from vidtag.models.nanodet import NanoDetOutput

    own = NanoDetOutput(torch.tensor([[[0.9, 0.1], [0.2, 0.1], [0.5, 0.0]]]), torch.full((1, 3, 4), 1.0), ((1, 3),), (8,))
    window = NanoDetOutput(torch.tensor([[[0.3, 0.6], [0.1, 0.7], [0.0, 0.5]]]), torch.full((1, 3, 4), 2.0), ((1, 3),), (8,))
    fused = fuse_by_cell(own, window)
    # cell 0: own 0.9 > 0.6; cell 1: window 0.7 > 0.2; cell 2: a tie at 0.5 keeps own
    assert torch.equal(fused.cls_scores, torch.tensor([[[0.9, 0.1], [0.1, 0.7], [0.5, 0.0]]]))
    assert fused.box_dists[0, :, 0].tolist() == [1.0, 2.0, 1.0]


def test_cell_fusion_without_a_gate_keeps_every_cell_at_least_as_confident_as_the_frame_alone(nanodet):
    frames = _frames(9, seed=6)
    model = build_iff(nanodet, IFFConfig(window=4, fusion="cells"))
    model.iff.flow.bias.data = torch.tensor([0.5, 0.25])
    detector = IFFVideoDetector(model, ("x",) * 80, DetectOptions(conf=0.05, imgsz=96))
    fused = list(detector.run(_chunks(frames, 4)))
    alone = list(IFFVideoDetector(build_iff(nanodet, IFFConfig(window=0)), ("x",) * 80,
                                  DetectOptions(conf=0.05, imgsz=96)).run(_chunks(frames, 4)))
    assert not detector.own_frames  # no gate: every frame was aggregated and fused
    for f, a in zip(fused, alone, strict=True):
        assert len(a) == 0 or (len(f) and f.scores.max() >= a.scores.max() - 1e-6)
