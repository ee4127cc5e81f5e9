"""Evaluator units: AP by hand, FGFA rules, motion categories, COCO vs pycocotools, tracking, class maps."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from vidtag.eval.classmap import COCO_TO_VID, load_class_map, resolve_class_map
from vidtag.eval.coco_ap import STAT_NAMES, coco_ap
from vidtag.eval.groundtruth import VID_CLASSES, FrameBoxes, VideoBoxes, from_cocovid, match_videos
from vidtag.eval.tracking import Sequence, TrackFrame, build_sequence, tracking_metrics
from vidtag.eval.vid import (
    FAST,
    MEDIUM,
    SLOW,
    UNKNOWN,
    average_precision,
    box_iou,
    greedy_match,
    match_thresholds,
    motion_category,
    motion_ious,
    vid_map,
)


def gt_frame(boxes, classes, tracks=None):
    n = len(classes)
    return FrameBoxes(np.array(boxes, float).reshape(-1, 4), classes, np.arange(n) if tracks is None else tracks)


def pred_frame(boxes, classes, scores, tracks=None):
    n = len(classes)
    return FrameBoxes(np.array(boxes, float).reshape(-1, 4), classes, -np.ones(n) if tracks is None else tracks, scores)


def one_video(gt_frames: dict, pred_frames: dict):
    return {"v": VideoBoxes("v", gt_frames)}, {"v": VideoBoxes("v", pred_frames)}, {"v": "v"}


# ----------------------------------------------------------------- AP by hand


def test_average_precision_all_point_by_hand():
    # Ranked TP, FP, TP with 2 positives: recall .5 .5 1, precision 1 .5 2/3.
    # Interpolated precision: 1 up to recall .5, then 2/3 up to 1.
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(5 / 6)
    # A later, higher precision lifts the earlier points: FP, TP (1 positive)
    # -> recall 0, 1; precision 0, .5 -> AP = 1 * .5.
    assert average_precision([0.0, 1.0], [0.0, 0.5]) == pytest.approx(0.5)


def test_vid_map_hand_worked():
    big = [[0, 0, 100, 100], [200, 0, 300, 100]]
    gt = {0: gt_frame(big + [[0, 200, 100, 300]], ["car", "car", "dog"])}
    pred = {
        0: pred_frame(
            [[0, 0, 100, 100], [400, 400, 500, 500], [200, 0, 300, 100], [0, 0, 100, 100], [600, 0, 700, 100]],
            ["car", "car", "car", "car", "bus"],
            [0.9, 0.8, 0.7, 0.6, 0.95],
        )
    }
    res = vid_map(*one_video(gt, pred))
    # car, ranked: .9 TP (first car), .8 FP (nowhere), .7 TP (second car),
    # .6 FP (duplicate of the first car, already taken).
    # recall .5 .5 1 1, precision 1 .5 2/3 .5 -> AP = .5 * 1 + .5 * 2/3 = 5/6.
    assert res["per_class"]["car"] == pytest.approx(5 / 6)
    # dog: one object, no detection -> AP 0.  bus: detections but no ground
    # truth -> not a class of the mean.  mAP = (5/6 + 0) / 2 = 5/12.
    assert res["per_class"]["dog"] == 0.0
    assert "bus" not in res["per_class"]
    assert res["all"] == pytest.approx(5 / 12)
    assert res["num_gt"]["all"] == 3


def test_greedy_match_prefers_highest_iou_untaken():
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    det = np.array([[2, 0, 12, 10], [1, 0, 11, 10]], float)
    # The 0.9 detection takes gt 1 (IoU 1); the 0.5 detection then takes gt 0
    # (IoU 9/11), the best box left.
    assert greedy_match(det, [0.9, 0.5], gt, np.full(2, 0.5)).tolist() == [1, 0]
    assert greedy_match(det, [0.5, 0.9], gt, np.full(2, 0.5)).tolist() == [1, 0]
    assert greedy_match(det[:1], [0.9], gt[:0], np.zeros(0)).tolist() == [-1]


def test_fgfa_small_box_rule():
    # 10 x 10 box: min(.5, 100 / (20 * 20)) = .25; 100 x 100: 10000 / 12100 > .5.
    thr = match_thresholds(np.array([[0, 0, 10, 10], [0, 0, 100, 100], [5, 5, 25, 15]], float))
    assert thr == pytest.approx([0.25, 0.5, 200 / (30 * 20)])
    assert match_thresholds(np.array([[0, 0, 10, 10]], float), small_box_rule=False) == pytest.approx([0.5])
    # A detection covering 3 of the 10 rows of a 10 x 10 box: IoU 30 / 100 = .3.
    gt = {0: gt_frame([[0, 0, 10, 10]], ["bird"])}
    pred = {0: pred_frame([[0, 0, 10, 3]], ["bird"], [0.9])}
    assert vid_map(*one_video(gt, pred))["all"] == 1.0
    assert vid_map(*one_video(gt, pred), small_box_rule=False)["all"] == 0.0


def vid_map_reference(gt_frames, pred_frames, cls):
    """Slow VOC-style reference: one global pass over all detections by score."""
    dets = [(s, f, b) for f, p in pred_frames.items() for b, c, s in zip(p.boxes, p.classes, p.scores) if c == cls]
    dets.sort(key=lambda d: -d[0])
    taken = {f: np.zeros(len(g), bool) for f, g in gt_frames.items()}
    npos = sum(int((g.classes == cls).sum()) for g in gt_frames.values())
    tps = []
    for score, f, box in dets:
        g = gt_frames[f]
        best, best_j = -1.0, -1
        for j in range(len(g)):
            if g.classes[j] != cls or taken[f][j]:
                continue
            w, h = g.boxes[j, 2] - g.boxes[j, 0], g.boxes[j, 3] - g.boxes[j, 1]
            iou = box_iou(box[None], g.boxes[j : j + 1])[0, 0]
            if iou > 0 and iou >= min(0.5, w * h / ((w + 10) * (h + 10))) and iou > best:
                best, best_j = iou, j
        if best_j >= 0:
            taken[f][best_j] = True
        tps.append(best_j >= 0)
    tp = np.cumsum(tps)
    rec = tp / npos
    prec = tp / np.arange(1, len(tps) + 1)
    ap = 0.0
    for i in range(len(tps)):  # all-point: step area with the max precision to the right
        prev = rec[i - 1] if i else 0.0
        ap += (rec[i] - prev) * prec[i:].max()
    return ap


def test_vid_map_matches_slow_reference_on_random_data():
    rng = np.random.default_rng(1)
    gt_frames, pred_frames = {}, {}
    for f in range(12):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(5, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        classes = rng.choice(["a", "b"], n).tolist()
        gt_frames[f] = gt_frame(boxes, classes, np.full(n, -1))
        m = int(rng.integers(0, 7))
        pick = rng.integers(0, max(n, 1), m)
        pb = boxes[pick] + rng.normal(0, 6, (m, 4)) if n else rng.uniform(0, 150, (m, 4))
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        pred_frames[f] = pred_frame(pb, rng.choice(["a", "b"], m).tolist(), rng.random(m).round(6))
    res = vid_map(*one_video(gt_frames, pred_frames))
    for cls in ("a", "b"):
        assert res["per_class"][cls] == pytest.approx(vid_map_reference(gt_frames, pred_frames, cls))


# ----------------------------------------------------------------- motion


def box_at(x, size=100):
    return [x, 0, x + size, size]


def test_motion_category_assignment_on_hand_built_tracks():
    # 100 x 100 boxes.  IoU of a box with itself shifted by s px: (100 - s) / (100 + s).
    # Track 1 static in frames 0-3: every neighbour IoU 1 -> slow.
    # Track 2 at x = 0, 20, 40 in frames 0-2: shift 20 -> 80/120 = 2/3, shift 40 -> 60/140 = 3/7.
    #   frame 0: mean(2/3, 3/7) = .548 fast; frame 1: mean(2/3, 2/3) fast.
    # Track 3 at x = 0, 15 in frames 0-1: 85/115 = .739 -> medium.
    # Track 4 only in frame 3: no neighbour -> unknown.
    # Track 5 in frames 0 and 11: 11 frames apart, outside a window of 10 -> unknown.
    frames = {}
    for f in range(12):
        boxes, tracks = [], []
        if f <= 3:
            boxes.append(box_at(500)), tracks.append(1)
        if f <= 2:
            boxes.append(box_at(20 * f)), tracks.append(2)
        if f <= 1:
            boxes.append(box_at(1000 + 15 * f)), tracks.append(3)
        if f == 3:
            boxes.append(box_at(2000)), tracks.append(4)
        if f in (0, 11):
            boxes.append(box_at(3000)), tracks.append(5)
        frames[f] = gt_frame(boxes, ["car"] * len(boxes), tracks)
    video = VideoBoxes("v", frames)
    m = motion_ious(video, window=10)
    assert m[0] == pytest.approx([1.0, (2 / 3 + 3 / 7) / 2, 85 / 115, np.nan], nan_ok=True)
    assert m[1] == pytest.approx([1.0, 2 / 3, 85 / 115])
    assert m[3] == pytest.approx([1.0, np.nan], nan_ok=True)
    assert motion_category(m[0]).tolist() == [SLOW, FAST, MEDIUM, UNKNOWN]
    assert motion_category(m[3]).tolist() == [SLOW, UNKNOWN]
    assert motion_ious(video, window=11)[0][3] == pytest.approx(1.0)
    # Boundaries: .9 and .7 are medium.
    assert motion_category(np.array([0.95, 0.9, 0.7, 0.69])).tolist() == [SLOW, MEDIUM, MEDIUM, FAST]


def test_motion_map_ignores_other_categories():
    # Frame 0 of two tracks over 3 frames: track 1 static (slow), track 2
    # moving 40 px per frame (fast).  Detections in frame 1 only: an FP with
    # score .9 and a hit on the fast object with .8.
    gt = {f: gt_frame([box_at(500), box_at(40 * f)], ["car", "car"], [1, 2]) for f in range(3)}
    pred = {1: pred_frame([box_at(800), box_at(40)], ["car", "car"], [0.9, 0.8])}
    res = vid_map(*one_video(gt, pred))
    # all: 6 objects; FP, TP -> recall 0, 1/6; precision 0, 1/2 -> AP = 1/6 * 1/2.
    assert res["all"] == pytest.approx(1 / 12)
    # slow: 3 objects; the TP on a fast object is ignored, the FP stays -> AP 0.
    assert res["slow"] == 0.0
    # fast: 3 objects; FP, TP -> recall 0, 1/3; precision 0, 1/2 -> AP 1/6.
    assert res["fast"] == pytest.approx(1 / 6)
    assert res["medium"] is None
    assert res["num_gt"] == {"all": 6, "slow": 3, "medium": 0, "fast": 3, "unknown": 0, "ignored": 0}


# ----------------------------------------------------------------- COCO


def test_coco_ap_equals_direct_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(2)
    classes = ["a", "b", "c"]
    gt_frames, pred_frames = {}, {}
    images, anns, results = [], [], []
    for f in range(8):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(4, 120, (n, 2))
        cls = rng.integers(0, 3, n)
        m = int(rng.integers(0, 8))
        pick = rng.integers(0, n, m)
        pxy = xy[pick] + rng.normal(0, 5, (m, 2))
        pwh = wh[pick] * rng.uniform(0.8, 1.2, (m, 2))
        pcls = np.where(rng.random(m) < 0.8, cls[pick], rng.integers(0, 3, m))
        scores = rng.random(m)
        gt_frames[f] = gt_frame(np.concatenate([xy, xy + wh], 1), [classes[c] for c in cls], np.full(n, -1))
        pred_frames[f] = pred_frame(np.concatenate([pxy, pxy + pwh], 1), [classes[c] for c in pcls], scores)
        images.append({"id": f + 1, "width": 640, "height": 480})
        for i in range(n):
            anns.append({"id": len(anns) + 1, "image_id": f + 1, "category_id": int(cls[i]) + 1, "bbox": [*xy[i], *wh[i]], "area": float(wh[i, 0] * wh[i, 1]), "iscrowd": 0})
        for i in range(m):
            results.append({"image_id": f + 1, "category_id": int(pcls[i]) + 1, "bbox": [*pxy[i], *pwh[i]], "score": float(scores[i])})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    direct = dict(zip(STAT_NAMES, ev.stats))
    ours = coco_ap(*one_video(gt_frames, pred_frames), classes)
    assert 0 < ours["AP"] < 1
    for key in ("AP", "AP50", "AP75"):
        assert ours[key] == pytest.approx(direct[key], abs=1e-12)


def test_coco_ap_empty_predictions_and_empty_gt():
    gt = {0: gt_frame([[0, 0, 10, 10]], ["a"])}
    res = coco_ap(*one_video(gt, {}), ["a"])
    assert res["AP"] == 0.0 and res["AP50"] == 0.0
    res = coco_ap(*one_video({0: gt_frame([], [])}, {0: pred_frame([[0, 0, 5, 5]], ["a"], [0.5])}), ["a"])
    assert res["AP"] is None


# ----------------------------------------------------------------- tracking


def seq_of(frames):
    """frames: list of (gt ids, pred ids, iou matrix)."""
    tfs = [TrackFrame(np.array(g, np.int64), np.array(p, np.int64), np.array(m, float).reshape(len(g), len(p))) for g, p, m in frames]
    ng = max([max(f.gt_ids, default=-1) for f in tfs]) + 1
    npred = max([max(f.pred_ids, default=-1) for f in tfs]) + 1
    return Sequence(tfs, ng, npred)


def test_tracking_perfect_tracker():
    gt = {f: gt_frame([box_at(10 * f), box_at(500 + 5 * f)], ["car", "dog"], [3, 7]) for f in range(6)}
    pred = {f: pred_frame(gt[f].boxes, ["car", "dog"], [0.9, 0.8], [1, 2]) for f in range(6)}
    res = tracking_metrics([build_sequence(VideoBoxes("v", gt), VideoBoxes("v", pred))])
    for key in ("MOTA", "MOTP", "IDF1", "IDP", "IDR", "HOTA", "DetA", "AssA", "LocA"):
        assert res[key] == pytest.approx(1.0), key
    assert (res["IDSW"], res["FP"], res["FN"], res["gt_tracks"], res["pred_tracks"]) == (0, 0, 0, 2, 2)


def test_tracking_id_switch_by_hand():
    # One object over 4 frames, boxes exact (IoU 1); the tracker calls it id 0
    # in frames 0-1 and id 1 in frames 2-3.
    res = tracking_metrics([seq_of([([0], [0], [[1.0]])] * 2 + [([0], [1], [[1.0]])] * 2)])
    # MOTA = 1 - (FN 0 + FP 0 + IDSW 1) / 4 GT = .75.
    assert res["IDSW"] == 1 and res["MOTA"] == pytest.approx(0.75)
    # IDF1: the object can be paired with one id only -> IDTP 2 of 4 GT and
    # 4 predicted boxes: 2 * 2 / (4 + 4) = .5.
    assert res["IDF1"] == pytest.approx(0.5) and res["IDTP"] == 2
    # HOTA: every box is a TP at every alpha -> DetA 1.  Each TP's id pair has
    # TPA 2, FNA 2, FPA 0 -> association IoU 2/4 -> AssA .5; HOTA = sqrt(.5).
    assert res["DetA"] == pytest.approx(1.0)
    assert res["AssA"] == pytest.approx(0.5)
    assert res["HOTA"] == pytest.approx(np.sqrt(0.5))


def test_tracking_miss_and_false_positive_by_hand():
    # Object in 2 frames; frame 1's box of the same track is elsewhere (IoU 0).
    res = tracking_metrics([seq_of([([0], [0], [[1.0]]), ([0], [0], [[0.0]])])])
    # FN 1, FP 1, IDSW 0 over 2 GT -> MOTA = 1 - 2/2 = 0.  IDTP 1 -> IDF1 = 2/(2+2).
    assert (res["FN"], res["FP"], res["IDSW"]) == (1, 1, 0)
    assert res["MOTA"] == pytest.approx(0.0) and res["IDF1"] == pytest.approx(0.5)


def test_tracking_keeps_previous_match_while_it_holds():
    # Frame 1: the old partner (id 0) still overlaps .6 >= .5, so it is kept
    # although id 1 overlaps better; id 1 is then a false positive, no switch.
    res = tracking_metrics([seq_of([([0], [0], [[0.9]]), ([0], [0, 1], [[0.6, 0.95]])])])
    assert (res["IDSW"], res["FP"], res["TP"]) == (0, 1, 2)
    assert res["MOTA"] == pytest.approx(0.5)


def test_tracking_ignores_unlinked_predictions():
    gt = {0: gt_frame([box_at(0)], ["car"], [1])}
    pred = {0: pred_frame([box_at(0), box_at(400)], ["car", "car"], [0.9, 0.9], [5, -1])}
    res = tracking_metrics([build_sequence(VideoBoxes("v", gt), VideoBoxes("v", pred))])
    assert res["num_pred"] == 1 and res["MOTA"] == 1.0


# ----------------------------------------------------------------- class maps and loaders


def test_builtin_and_identity_class_map():
    pred = ["car", "cat", "truck", "person", "boat", "cow", "Red Panda"]
    mapping = resolve_class_map(pred, VID_CLASSES)
    assert mapping == {"car": "car", "cat": "domestic_cat", "boat": "watercraft", "cow": "cattle", "Red Panda": "red_panda"}
    assert len(COCO_TO_VID) == 16 and set(COCO_TO_VID.values()) <= set(VID_CLASSES)
    # COCO ground truth: identity, no VID renaming.
    assert resolve_class_map(["cat", "truck"], ["cat", "truck", "person"]) == {"cat": "cat", "truck": "truck"}


def test_user_class_map_files(tmp_path):
    j = tmp_path / "map.json"
    j.write_text(json.dumps({"truck": "car", "cat": None}))
    c = tmp_path / "map.csv"
    c.write_text("pred_name,gt_name\n# comment\ntruck, car\ncat,\n")
    for path in (j, c):
        user = load_class_map(path)
        assert user == {"truck": "car", "cat": None}
        assert resolve_class_map(["truck", "cat", "dog"], VID_CLASSES, user) == {"truck": "car", "dog": "dog"}
    with pytest.raises(ValueError, match="not a ground-truth class"):
        resolve_class_map(["truck"], VID_CLASSES, {"truck": "lorry"})


def test_cocovid_loader_and_video_matching():
    data = {
        "videos": [{"id": 1, "name": "val/clip_a", "width": 64, "height": 48}, {"id": 2, "name": "clip_b"}],
        "images": [
            {"id": 10, "video_id": 1, "frame_id": 0},
            {"id": 11, "video_id": 1, "frame_id": 1},
            {"id": 12, "video_id": 2, "frame_id": 0},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4], "instance_id": 5},
            {"id": 2, "image_id": 12, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "car"}],
    }
    videos = from_cocovid(data)
    a = videos["val/clip_a"]
    assert (a.width, a.height, list(a.frames)) == (64, 48, [0, 1])
    assert len(a.frames[0]) == 0
    assert a.frames[1].boxes.tolist() == [[1, 2, 4, 6]] and a.frames[1].track_ids.tolist() == [5]
    assert videos["clip_b"].frames[0].ignore.tolist() == [True]
    pred = {"clip_a.mp4": None, "clip_b": None, "other": None}
    pairs, unmatched_gt, unmatched_pred = match_videos(pred, videos)
    assert pairs == {"clip_b": "clip_b", "val/clip_a": "clip_a.mp4"}
    assert unmatched_gt == [] and unmatched_pred == ["other"]


def test_per_class_ap50_and_the_box_weighted_mean_by_hand():
    from vidtag.eval.robustness import ap50, ap50_by_class, box_weighted

    # class "a": 3 boxes, all found; class "b": 1 box, its only prediction is elsewhere
    a_boxes = [[0, 0, 50, 50], [100, 100, 150, 150], [200, 0, 260, 60]]
    gt = {0: gt_frame(a_boxes + [[300, 300, 340, 340]], ["a", "a", "a", "b"])}
    pred = {0: pred_frame(a_boxes + [[0, 300, 40, 340]], ["a", "a", "a", "b"], [0.9, 0.8, 0.7, 0.6])}
    gt_videos, pred_videos, _ = one_video(gt, pred)
    per_class = ap50_by_class(gt_videos, pred_videos, ["a", "b", "c"])
    assert per_class == {"a": (pytest.approx(1.0), 3), "b": (0.0, 1)}  # "c" has no box: not scored
    assert box_weighted(per_class) == pytest.approx(0.75)  # (1.0 * 3 + 0.0 * 1) / 4
    assert ap50(gt_videos, pred_videos, ["a", "b", "c"]) == pytest.approx(0.5)  # the class mean beside it
    assert ap50_by_class(gt_videos, pred_videos, ["a", "b"], among=["b"]) == {"b": (0.0, 1)}
    assert box_weighted({}) is None
