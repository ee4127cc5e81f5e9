"""vidtag.eval.robustness: the robustness benchmark's settings, scoring and tables, on small
hand-made detections (no video, no model, no footage)."""

from types import SimpleNamespace

import numpy as np
import pytest

from vidtag.eval import robustness as rb
from vidtag.eval.groundtruth import FrameBoxes, VideoBoxes
from vidtag.types import Detections

CLASSES = ["person", "car", "dog"]
PERSON = [0, 0, 50, 100]
CAR = [100, 100, 200, 150]
ELSEWHERE = [250, 0, 300, 40]


def dets(*boxes):
    """Detections of (box, label, score) triples."""
    if not boxes:
        return Detections.empty()
    return Detections([b for b, _, _ in boxes], [s for _, _, s in boxes], [CLASSES.index(c) for _, c, _ in boxes])


def frame(boxes, classes, scores=None):
    n = len(classes)
    return FrameBoxes(np.array(boxes, float).reshape(-1, 4), classes, -np.ones(n), scores)


# --------------------------------------------------------------------------- the class set of each column


def two_clips():
    """Clip "c": 50 frames, 0-19 degraded; a person in every frame, a car in frames 14-39 (26 boxes,
    6 of them in degraded frames), a dog below the pseudo-GT score everywhere.  Clip "d": 20 frames,
    all degraded, a car in frames 5-19 (15 boxes).  On the degraded pass every car on a degraded
    frame is missed; everything else is found where it is."""
    clean = {
        "c": [dets((PERSON, "person", 0.9), (ELSEWHERE, "dog", 0.3), *([(CAR, "car", 0.8)] if 14 <= t < 40 else [])) for t in range(50)],
        "d": [dets(*([(CAR, "car", 0.8)] if t >= 5 else [])) for t in range(20)],
    }
    masks = {"c": np.arange(50) < 20, "d": np.ones(20, bool)}
    degraded = {
        "c": [dets((PERSON, "person", 0.9), *([(CAR, "car", 0.8)] if 20 <= t < 40 else [])) for t in range(50)],
        "d": [dets() for _ in range(20)],
    }
    return clean, masks, degraded


def videos(runs: dict) -> dict:
    return {n: rb.to_video_boxes(n, d, CLASSES, np.arange(len(d))) for n, d in runs.items()}


def test_each_column_chooses_its_classes_from_the_frames_it_scores():
    clean, masks, degraded = two_clips()
    gt = rb.PseudoGT.from_detections(clean, masks, CLASSES, sizes={"c": (320, 240), "d": (320, 240)})
    preds = {"degraded": videos(degraded), "clean": videos(clean)}

    # the whole-clip rule: car has 26 boxes in clip c, so it enters every column of c
    assert gt.scored(CLASSES) == {"c": ["person", "car"], "d": [], "pooled": ["person", "car"]}
    means, extras = rb.score_scope(gt, preds, CLASSES, ["c"])
    # all frames of the degraded clip: person 50 boxes (AP 1), car 26 (20 found, all ranked first:
    # precision 1 up to recall 20/26, so 77 of COCO's 101 recall points)
    car = 77 / 101
    assert extras["ap50_degraded_all_classes"] == ["person", "car"] and extras["ap50_degraded_all_boxes"] == 76
    assert means["ap50_degraded_all"] == pytest.approx((1 + car) / 2)
    assert extras["ap50_degraded_all_box_weighted"] == pytest.approx((50 + 26 * car) / 76)
    # degraded frames only: car has 6 boxes there, too few; person alone (20 boxes, all found)
    assert extras["ap50_degraded_only_classes"] == ["person"] and extras["ap50_degraded_only_boxes"] == 20
    assert means["ap50_degraded_only"] == pytest.approx(1.0)
    assert extras["ap50_degraded_only_box_weighted"] == pytest.approx(1.0)
    # the whole-clip class set would have averaged the 6 missed cars in as a class of their own
    assert rb.ap50(gt.degraded_frames, preds["degraded"], CLASSES, gt.scored(CLASSES)["c"]) == pytest.approx(0.5)
    # clean frames of the degraded clip (20-49): person 30, car 20, all found
    assert extras["ap50_degraded_clip_clean_frames_classes"] == ["person", "car"]
    assert extras["ap50_degraded_clip_clean_frames_boxes"] == 50
    assert means["ap50_degraded_clip_clean_frames"] == pytest.approx(1.0)
    assert (means["ap50_clean_clip"], extras["ap50_clean_clip_boxes"]) == (pytest.approx(1.0), 76)
    assert means["ap50_clean_clip_every_class"] == pytest.approx(1.0)

    # clip d alone has too few cars for any column
    means, extras = rb.score_scope(gt, preds, CLASSES, ["d"])
    assert means["ap50_degraded_only"] is None and extras["ap50_degraded_only_box_weighted"] is None
    assert (extras["ap50_degraded_only_boxes"], extras["ap50_degraded_only_classes"]) == (0, [])

    # pooled: 6 + 15 = 21 cars on degraded frames, all missed, enter beside 20 persons
    means, extras = rb.score_scope(gt, preds, CLASSES)
    assert extras["ap50_degraded_only_classes"] == ["person", "car"] and extras["ap50_degraded_only_boxes"] == 41
    assert means["ap50_degraded_only"] == pytest.approx(0.5)
    assert extras["ap50_degraded_only_box_weighted"] == pytest.approx(20 / 41)


def test_score_settings_keeps_the_result_keys_and_adds_the_column_extras():
    clean, masks, degraded = two_clips()
    gt = rb.PseudoGT.from_detections(clean, masks, CLASSES)
    raw = {**{(n, "clean", "frame"): d for n, d in clean.items()}, **{(n, "degraded", "frame"): d for n, d in degraded.items()}}
    runs = rb.Runs(CLASSES, raw, {k: 1.0 for k in raw}, {k: [] for k in raw})
    [result] = rb.score_settings(runs, gt, [("frame", "none")])

    old = ["ap50_degraded_all", "ap50_degraded_only", "ap50_degraded_clip_clean_frames", "ap50_clean_clip", "ap50_clean_clip_every_class"]
    extras = [f"{key}_{extra}" for key, _, _ in rb.COLUMNS for extra in ("box_weighted", "boxes", "classes")]
    assert (result["method"], result["link"]) == ("frame", "none")
    assert list(result["per_clip"]["c"]) == old + ["fps", "model_s", "link_s", "frames"] + extras
    assert list(result["pooled"]) == old + ["fps", "frames", "ap50_clean_clip_per_class"] + extras
    assert result["per_clip"]["c"]["frames"] == 50 and result["pooled"]["frames"] == 70
    assert result["per_clip"]["c"]["model_s"] == {"degraded": 1.0, "clean": 1.0}
    row = result["per_clip"]["c"]
    assert row["fps"] == pytest.approx(100 / (2.0 + sum(row["link_s"].values())))  # both passes: model + linking seconds
    assert result["per_clip"]["d"]["ap50_degraded_only"] is None  # 15 cars: too few
    assert result["per_clip"]["c"]["ap50_degraded_only"] == pytest.approx(1.0)  # person alone: the 6 cars are too few
    assert result["per_clip"]["c"]["ap50_degraded_only_classes"] == ["person"]
    assert result["pooled"]["ap50_degraded_only_classes"] == ["person", "car"]
    assert set(result["pooled"]["ap50_clean_clip_per_class"]) == {"person", "car"}  # the dog is below the pseudo-GT score

    lines = rb.box_weighted_table([dict(method="frame", link="none", **result["per_clip"]["c"])])
    assert "degraded frames only: person;" in lines[0]
    assert "degraded frames only, box-weighted (boxes 20, classes 1)" in lines[2]
    assert lines[-1] == "| frame | none | 91.9 | 100.0 | 100.0 | 100.0 |"  # (50 + 26 * 77 / 101) / 76
    assert rb.box_weighted_table([{"method": "frame", "link": "none", "ap50_degraded_all": 1.0}]) == []  # a run before the extras


def test_pseudo_gt_keeps_boxes_at_the_score_line_and_counts_full_frames():
    clean = {"c": [dets((PERSON, "person", 0.4), (CAR, "car", 0.39)), dets((PERSON, "person", 0.9))]}
    gt = rb.PseudoGT.from_detections(clean, {"c": np.array([True, False])}, CLASSES, max_det=2)
    assert gt.at_max_det == 1
    assert list(gt.degraded_frames["c"].frames) == [0] and list(gt.clean_frames["c"].frames) == [1]
    assert gt.every_frame["c"].frames[0].classes.tolist() == ["person"]
    assert gt.class_counts(CLASSES) == (["person"], {"c": {"person": 2}})


# --------------------------------------------------------------------------- matching


def test_greedy_match_takes_gt_by_score_and_class():
    gt = frame([PERSON, CAR], ["person", "car"])
    pred = frame([PERSON, [0, 0, 50, 90], CAR, ELSEWHERE], ["person", "person", "dog", "person"], [0.5, 0.9, 0.8, 0.7])
    # the 0.9 box takes the person (IoU 0.9); the 0.5 box finds it taken; the dog is not a car
    assert rb.greedy_match(pred, gt).tolist() == [False, True, False, False]
    assert rb.greedy_match(pred, gt, iou=0.95).tolist() == [True, False, False, False]
    assert rb.greedy_match(pred, frame([], [])).tolist() == [False] * 4


def test_recall_ceiling_ignores_scores_but_not_classes():
    gt = frame([PERSON, CAR], ["person", "car"])
    assert rb.recall_ceiling(frame([CAR, PERSON], ["dog", "person"], [0.1, 0.01]), gt).tolist() == [True, False]
    assert rb.recall_ceiling(frame([], [], []), gt).tolist() == [False, False]
    assert rb.recall_ceiling(frame([PERSON], ["person"], [1.0]), frame([], [])).tolist() == []


def test_score_profile_by_hand():
    gt = {"v": VideoBoxes("v", {0: frame([PERSON, CAR], ["person", "car"]), 2: frame([PERSON], ["person"])})}
    pred = {"v": VideoBoxes("v", {
        0: frame([PERSON, [0, 0, 50, 95], ELSEWHERE], ["person", "person", "car"], [0.9, 0.6, 0.3]),
        1: frame([CAR], ["car"], [0.99]),  # no GT frame: not counted
        2: frame([PERSON], ["person"], [0.5]),
    })}
    profile = rb.score_profile(pred, gt)
    assert profile == {"recall_ceiling": pytest.approx(2 / 3), "tp": 2, "fp": 2,
                       "mean_tp_score": pytest.approx(0.7), "mean_fp_score": pytest.approx(0.45)}
    assert rb.score_profile({}, {})["recall_ceiling"] is None


def test_seqnms_breakdown_splits_removal_and_rescoring():
    # a person on frames 0-2 (scores 0.5, 0.2, 0.5) and a lone car on frame 1 (0.45)
    raw = [dets((PERSON, "person", 0.5)), dets(([0, 0, 50, 98], "person", 0.2), (CAR, "car", 0.45)), dets((PERSON, "person", 0.5))]
    variants, stats = rb.seqnms_breakdown(raw, CLASSES, np.arange(3), "v")
    # the person's path: mean 0.4, peak 0.5 -> 0.45 for each member (seqnms+), 0.4 (seqnms)
    assert variants["all boxes, Seq-NMS+ scores on paths (rescoring only)"].frames[1].scores.tolist() == pytest.approx([0.45, 0.45])
    assert variants["Seq-NMS (mean rescoring), same paths"].frames[0].scores.tolist() == pytest.approx([0.4])
    assert variants["per-frame"].frames[1].scores.tolist() == pytest.approx([0.2, 0.45])
    assert stats == {
        "boxes_at_or_above_gt_score": 3, "of_them_removed": 0, "of_them_rescored_below": 0,
        "boxes_below_gt_score": 1, "of_them_rescored_to_or_above": 1,
        "paths": 2, "boxes_per_frame": 4, "boxes_on_paths": 4,
        "share_of_kept_boxes_on_1_frame_paths": 0.25, "median_path_length_of_kept_boxes": 3.0,
    }


def test_runs_link_each_run_once():
    raw = {("v", "degraded", "frame"): [dets((PERSON, "person", 0.5)), dets((PERSON, "person", 0.5))]}
    runs = rb.Runs(CLASSES, raw, {}, {("v", "degraded", "frame"): []})
    linked = runs.linked(("v", "degraded", "frame"), "seqnms+")
    assert runs.linked(("v", "degraded", "frame"), "seqnms+") is linked
    assert linked[0].track_ids.tolist() == linked[1].track_ids.tolist() == [1]
    assert sorted(runs.boxes(("v", "degraded", "frame"), "seqnms+").frames) == [0, 1]


# --------------------------------------------------------------------------- settings


def test_parse_variant():
    assert rb.parse_variant("frame") == ("frame", {})
    assert rb.parse_variant("psla:d=2:rfu=0") == ("psla", {"max_displacement": 2, "use_rfu": False})
    assert rb.parse_variant("iff:w=4:module=basic") == ("iff", {"window": 4, "module": "basic"})
    with pytest.raises(SystemExit, match="bad variant 'x=1'"):
        rb.parse_variant("psla:x=1")
    with pytest.raises(SystemExit, match="none for frame"):
        rb.parse_variant("frame:d=2")


def test_parse_settings():
    settings, notes = rb.parse_settings("frame, frame+seqnms+,psla:d=2,frame", ("frame",))
    assert settings == [("frame", "none"), ("frame", "seqnms+")]
    assert notes == ["psla:d=2: skipped, not in vidtag.models.build.METHODS (frame)"]
    settings, notes = rb.parse_settings(None, ("frame", "iff"))
    assert settings == [("frame", "none"), ("frame", "seqnms+"), ("iff", "none"), ("iff", "seqnms+")]
    assert notes == ["psla: skipped, not in vidtag.models.build.METHODS (frame, iff)"]
    settings, _ = rb.parse_settings("psla", ("frame", "psla"), ablation=True)
    assert settings == [("psla", "none")] + [(m, "none") for m in rb.ABLATION]
    with pytest.raises(SystemExit, match="unknown linking"):
        rb.parse_settings("frame+nope", ("frame",))
    assert rb.setting_name("psla", "none") == "psla" and rb.setting_name("psla", "seqnms+") == "psla+seqnms+"


def test_build_detectors_drops_failures_and_restated_variants():
    def build(method, options, device):
        if method == "iff":
            raise FileNotFoundError("no iff weights")
        config = {"psla": "d4", "psla:scale=stride": "d4", "psla:d=2": "d2"}.get(method)
        return SimpleNamespace(model=None if config is None else SimpleNamespace(config=config), modules_file="m.pt")

    notes = []
    detectors = rb.build_detectors(["frame", "psla", "psla:scale=stride", "psla:d=2", "iff"], None, "cpu", notes, build)
    assert list(detectors) == ["frame", "psla", "psla:d=2"]
    assert notes == ["iff: skipped, build_detector failed: no iff weights",
                     "psla:scale=stride: the shipped psla setting itself, see the psla row"]


# --------------------------------------------------------------------------- output


def test_write_md_keeps_the_text_after_the_end_marker(tmp_path):
    path = tmp_path / "RESULTS.md"
    rb.write_md(path, ["a"])
    assert path.read_text() == f"{rb.MD_BEGIN}\na\n{rb.MD_END}\n"
    path.write_text(path.read_text() + "kept\n")
    rb.write_md(path, ["b", "c"])
    assert path.read_text() == f"{rb.MD_BEGIN}\nb\nc\n{rb.MD_END}\nkept\n"


def test_accuracy_table_rows():
    row = {"method": "iff", "link": "none", "ap50_degraded_all": 0.5, "ap50_degraded_only": None,
           "ap50_degraded_clip_clean_frames": 0.25, "ap50_clean_clip": 1.0, "fps": 5.0}
    lines = rb.accuracy_table([row], 10.0)
    assert lines[2] == "| iff | none | 50.0 | - | 25.0 | 100.0 | - | 5.0 | 0.50x |"
    assert rb.accuracy_table([row], None)[2].endswith("| 5.0 | - |")
