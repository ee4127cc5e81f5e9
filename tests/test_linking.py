"""vidtag.linking against the plain reference and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from vidtag.seqnms_reference import reference_link, reference_paths
from vidtag.linking import link, seq_nms_paths
from vidtag.types import Detections


def frame(*boxes):
    """Detections from (x1, y1, x2, y2, score, label) tuples."""
    if not boxes:
        return Detections.empty()
    arr = np.array(boxes, dtype=np.float64)
    return Detections(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


def random_video(seed: int) -> tuple[list[Detections], dict]:
    """Small videos built to hit the corners: coarse integer grids (identical
    boxes, IoUs exactly at the thresholds), quantised scores (exact ties),
    empty frames, several classes, objects that move slowly (long paths)."""
    rng = np.random.default_rng(seed)
    num_frames = int(rng.integers(0, 14))
    num_classes = int(rng.integers(1, 4))
    quantised = seed % 2 == 0
    objects = [
        (rng.integers(0, 10, 2) * 4, rng.integers(2, 5, 2) * 4, int(rng.integers(num_classes)))
        for _ in range(int(rng.integers(0, 4)))
    ]
    frames = []
    for _ in range(num_frames):
        boxes, labels = [], []
        for k, (xy, wh, label) in enumerate(objects):
            xy = xy + rng.integers(-2, 3, 2)
            objects[k] = (xy, wh, label)
            if rng.random() < 0.8:
                boxes.append([*xy, *(xy + wh)])
                labels.append(label)
        for _ in range(int(rng.integers(0, 6))):
            xy, wh = rng.integers(0, 8, 2) * 4, rng.integers(1, 4, 2) * 4
            boxes.append([*xy, *(xy + wh)])
            labels.append(int(rng.integers(num_classes)))
        n = len(boxes)
        scores = rng.choice([0.0, 0.25, 0.5, 1.0], n) if quantised else rng.random(n)
        frames.append(Detections(np.array(boxes, np.float32).reshape(-1, 4), scores, np.array(labels, np.int64)))
    options = dict(
        link_iou=float(rng.choice([0.0, 0.3, 0.5, 0.7])),
        suppress_iou=float(rng.choice([0.3, 0.5, 1.0])),
        nms_iou=float(rng.choice([0.3, 0.5])),
    )
    return frames, options


def assert_same_detections(fast: list[Detections], ref: list[Detections]) -> None:
    assert len(fast) == len(ref)
    for f, r in zip(fast, ref):
        np.testing.assert_array_equal(f.boxes, r.boxes)
        np.testing.assert_array_equal(f.labels, r.labels)
        np.testing.assert_array_equal(f.track_ids, r.track_ids)
        np.testing.assert_allclose(f.scores, r.scores, rtol=0, atol=1e-6)


def assert_valid_tracks(frames: list[Detections], out: list[Detections]) -> None:
    """Every box has a track id >= 1, ids are unique per frame, a track spans consecutive frames with one label."""
    assert len(out) == len(frames)
    seen: dict[int, list[tuple[int, int]]] = {}
    for t, (inp, d) in enumerate(zip(frames, out)):
        assert d.track_ids is not None and len(d.track_ids) == len(d)
        assert (d.track_ids >= 1).all()
        assert len(set(d.track_ids.tolist())) == len(d)
        assert len(d) <= len(inp)
        for tid, label in zip(d.track_ids.tolist(), d.labels.tolist()):
            seen.setdefault(tid, []).append((t, label))
    assert sorted(seen) == list(range(1, len(seen) + 1))
    for members in seen.values():
        ts = [t for t, _ in members]
        assert ts == list(range(ts[0], ts[0] + len(ts)))
        assert len({label for _, label in members}) == 1


@pytest.mark.parametrize("seed", range(100))
def test_paths_match_reference(seed):
    frames, opt = random_video(seed)
    for nms_iou in (None, opt["nms_iou"]):
        fast = seq_nms_paths(frames, link_iou=opt["link_iou"], suppress_iou=opt["suppress_iou"], nms_iou=nms_iou)
        ref = reference_paths(frames, link_iou=opt["link_iou"], suppress_iou=opt["suppress_iou"], nms_iou=nms_iou)
        assert [tuple(p) for p in fast] == ref  # exact: members, float64 score sum and max


@pytest.mark.parametrize("method", ["seqnms+", "seqnms"])
@pytest.mark.parametrize("seed", range(100, 130))
def test_link_matches_reference(seed, method):
    frames, opt = random_video(seed)
    fast = link(frames, method, **opt)
    assert_same_detections(fast, reference_link(frames, method, **opt))
    assert_valid_tracks(frames, fast)


@pytest.mark.parametrize("method", ["seqnms+", "seqnms"])
def test_longer_video_matches_reference(method):
    rng = np.random.default_rng(7)
    frames = []
    for seed in range(40):  # concatenated random videos: long, with many classes and paths
        frames += random_video(int(rng.integers(1000, 2000)))[0]
    fast = link(frames, method)
    assert_same_detections(fast, reference_link(frames, method))
    assert_valid_tracks(frames, fast)


@pytest.mark.parametrize("method", ["seqnms+", "seqnms"])
def test_degenerate_inputs(method):
    box = (0, 0, 10, 10, 0.5, 0)
    cases = [
        [],
        [Detections.empty()],
        [Detections.empty()] * 5,
        [frame(box)],
        [Detections.empty(), frame(box), Detections.empty()],
        [frame(box, box, box)] * 3,  # identical boxes, identical scores
        [frame((0, 0, 10, 10, 0.0, 0))] * 3,  # zero scores
        [frame((5, 5, 5, 5, 0.5, 0), (5, 5, 5, 5, 0.5, 0))] * 2,  # zero-area boxes: IoU 0, never linked
    ]
    for frames in cases:
        fast = link(frames, method)
        assert_same_detections(fast, reference_link(frames, method))
        assert_valid_tracks(frames, fast)
    assert link([], method) == []
    (single,) = link([frame(box)], method)
    assert single.track_ids.tolist() == [1] and single.scores.tolist() == [0.5]
    identical = link([frame(box, box, box)] * 3, method)
    assert [d.track_ids.tolist() for d in identical] == [[1]] * 3  # lowest index wins, the rest is suppressed
    zero_area = link([frame((5, 5, 5, 5, 0.5, 0), (5, 5, 5, 5, 0.5, 0))] * 2, "seqnms")
    assert [d.track_ids.tolist() for d in zero_area] == [[1, 2], [3, 4]]


def test_none_passes_through():
    frames = [frame((0, 0, 10, 10, 0.5, 0)), Detections.empty()]
    out = link(frames, "none")
    assert out == frames and all(o is f for o, f in zip(out, frames))
    assert all(o.track_ids is None for o in out)


def test_bad_input():
    with pytest.raises(ValueError, match="seqnms"):
        link([], "seq-nms")
    with pytest.raises(ValueError, match="finite"):
        link([frame((0, 0, 10, 10, float("nan"), 0))], "seqnms")


def crossing_objects():
    """A moves right, B left, 5 px a frame, 20x20 boxes; they coincide in frame 2.

    Worked by hand (link IoU of a 5 px shift = 15/25 = 0.6):
    DP   frame:  0    1    2    3    4
         A      .9  1.8  2.7  3.6  4.5   (A2 prefers A1 = 1.8 over B1 = 1.6)
         B      .8  1.6  2.6  3.5  4.3   (B2 and B3 come from A: crossing links)
    Best path: A0..A4 (4.5).  It suppresses B1 and B3 (IoU 10/30 = 0.33 >= 0.3)
    and B2 (identical); B0 and B4 remain, not adjacent: tracks 2 and 3, the tie
    at 0.8 going to the earlier frame.
    """
    xs_a, xs_b = [0, 5, 10, 15, 20], [20, 15, 10, 5, 0]
    return [frame((a, 0, a + 20, 20, 0.9, 0), (b, 0, b + 20, 20, 0.8, 0)) for a, b in zip(xs_a, xs_b)]


@pytest.mark.parametrize("method", ["seqnms+", "seqnms"])
def test_crossing_objects(method):
    out = link(crossing_objects(), method)
    assert [d.track_ids.tolist() for d in out] == [[1, 2], [1], [1], [1], [1, 3]]
    assert [d.boxes[:, 0].tolist() for d in out] == [[0, 20], [5], [10], [15], [20, 0]]
    np.testing.assert_allclose(np.concatenate([d.scores for d in out]), [0.9, 0.8, 0.9, 0.9, 0.9, 0.9, 0.8], atol=1e-6)
    paths = seq_nms_paths(crossing_objects())
    assert [p.members for p in paths] == [((0, 0), (1, 0), (2, 0), (3, 0), (4, 0)), ((0, 1),), ((4, 1),)]


def test_object_with_gap():
    """Seen in frames 0-1 (0.6) and 3-4 (0.4, 1.0); missing in frame 2.

    Paths: frames 3-4 (sum 1.4) before frames 0-1 (sum 1.2).  seqnms rescores
    with the mean: 0.7 and 0.6; seqnms+ with 0.5 * mean + 0.5 * max: 0.85 and 0.6.
    """
    box = (0, 0, 10, 10)
    frames = [frame((*box, 0.6, 3)), frame((*box, 0.6, 3)), Detections.empty(), frame((*box, 0.4, 3)), frame((*box, 1.0, 3))]
    for method, late, early in (("seqnms", 0.7, 0.6), ("seqnms+", 0.85, 0.6)):
        out = link(frames, method)
        assert [d.track_ids.tolist() for d in out] == [[2], [2], [], [1], [1]]
        np.testing.assert_allclose([s for d in out for s in d.scores], [early, early, late, late], atol=1e-6)


def test_clutter_and_duplicates():
    """A steady object (0.5) over 4 frames, a weaker near-duplicate of it in
    frame 1 (IoU 0.81), and a strong clutter box (0.95) per frame that never
    links (far apart).  The object's path (sum 2.0) comes first and drops the
    duplicate; the clutter boxes follow one by one, in frame order."""
    obj = (100, 100, 150, 150, 0.5, 0)
    dup = (102, 102, 152, 152, 0.3, 0)
    clutter = [(0, 0, 20, 20, 0.95, 0), (300, 0, 320, 20, 0.95, 0), (0, 300, 20, 320, 0.95, 0), (300, 300, 320, 320, 0.95, 0)]
    frames = [frame(obj, clutter[0]), frame(clutter[1], dup, obj), frame(obj, clutter[2]), frame(obj, clutter[3])]
    for method in ("seqnms+", "seqnms"):
        out = link(frames, method)
        assert [d.track_ids.tolist() for d in out] == [[1, 2], [3, 1], [1, 4], [1, 5]]
        np.testing.assert_allclose([s for d in out for s in d.scores], [0.5, 0.95, 0.95, 0.5, 0.5, 0.95, 0.5, 0.95], atol=1e-6)


def test_single_box_path_does_not_end_the_search():
    """The first path is one box (0.99 beats the 3-frame path's 0.9); the
    long path must still come out whole, not as three single boxes."""
    weak = (0, 0, 10, 10, 0.3, 1)
    frames = [frame((50, 50, 60, 60, 0.99, 1), weak), frame(weak), frame(weak)]
    out = link(frames, "seqnms")
    assert [d.track_ids.tolist() for d in out] == [[1, 2], [2], [2]]
    np.testing.assert_allclose(out[0].scores, [0.99, 0.3], atol=1e-6)


def test_classes_never_interact():
    """Identical boxes of classes 2 and 0 neither suppress nor link each other; class 0 is searched first."""
    box = (0, 0, 10, 10)
    frames = [frame((*box, 0.9, 2), (*box, 0.1, 0)), frame((*box, 0.9, 2), (*box, 0.1, 0))]
    out = link(frames, "seqnms+")
    assert [d.track_ids.tolist() for d in out] == [[2, 1], [2, 1]]
    np.testing.assert_allclose([d.scores.tolist() for d in out], [[0.9, 0.1], [0.9, 0.1]], atol=1e-6)


def test_ties_between_predecessors_and_ends():
    """Equal-value predecessors: the lower index; equal-value ends: the earlier
    frame, then the lower index.  Boxes 0 and 1 of frame 0 are far apart and
    both link to frame 1's box (wide, IoU 0.5 with each)."""
    frames = [
        frame((0, 0, 10, 10, 0.5, 0), (10, 0, 20, 10, 0.5, 0)),
        frame((0, 0, 20, 10, 0.5, 0)),
    ]
    paths = seq_nms_paths(frames, suppress_iou=0.9)
    assert [p.members for p in paths] == [((0, 0), (1, 0)), ((0, 1),)]
    frames = [frame((0, 0, 10, 10, 0.5, 0), (50, 0, 60, 10, 0.5, 0)), frame((100, 0, 110, 10, 0.5, 0))]
    assert [p.members for p in seq_nms_paths(frames)] == [((0, 0),), ((0, 1),), ((1, 0),)]


@pytest.mark.parametrize("method", ["seqnms", "seqnms+"])
@pytest.mark.parametrize("seed", range(6))
def test_no_track_crosses_a_shot_start(seed, method):
    """Linking with shot starts == linking each shot on its own, track ids numbered on across the shots."""
    frames, options = random_video(seed)
    frames = frames + frames[::-1]  # the same boxes on both sides of the cut
    cut = len(frames) // 2
    out = link(frames, method, shot_starts=[cut, 0, len(frames), cut], **options)  # duplicates and the ends are ignored
    before, after = link(frames[:cut], method, **options), link(frames[cut:], method, **options)
    offset = max((int(d.track_ids.max()) for d in before if len(d)), default=0)
    want = before + [d.with_tracks(d.track_ids + offset, d.scores) for d in after]
    assert_same_detections(out, want)
    assert_valid_tracks(frames, out)
    if cut:
        ids_before = {i for d in out[:cut] for i in d.track_ids.tolist()}
        assert not ids_before & {i for d in out[cut:] for i in d.track_ids.tolist()}


def test_a_still_object_is_split_at_the_cut():
    still = [frame((10, 10, 50, 50, 0.9, 0)) for _ in range(6)]
    assert {int(d.track_ids[0]) for d in link(still)} == {1}
    split = link(still, shot_starts=[4])
    assert [int(d.track_ids[0]) for d in split] == [1, 1, 1, 1, 2, 2]
