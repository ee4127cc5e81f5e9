"""End to end: a tiny ImageNet VID annotation tree + vidtag .coco.json predictions -> report.evaluate (and the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidtag.eval import evaluate, format_rows
from vidtag.eval.groundtruth import VID_WNIDS

WNID = {name: wnid for wnid, name in VID_WNIDS.items()}
PRED_CLASSES = ["person", "car", "cat", "truck", "bus"]  # a COCO-style model's class order
N_FRAMES = 6


def objects_of(video: int, f: int) -> list[tuple[int, str, list[float]]]:
    """(track id, VID class, xyxy) of the ground-truth objects of a frame."""
    if video == 0:
        objs = [(0, "car", [10 + 2 * f, 20, 110 + 2 * f, 80])]  # a slow car
        if f >= 2:
            objs.append((1, "domestic_cat", [200 + 30 * f, 100, 260 + 30 * f, 160]))  # a fast cat
        return objs
    if f == 3:
        return []  # a frame without objects
    return [(0, "bus", [0, 0, 300, 200]), (1, "antelope", [400, 50, 450, 100])]


def write_xml(path: Path, objs, width=640, height=360):
    parts = [f"<annotation><folder>x</folder><filename>{path.stem}</filename><size><width>{width}</width><height>{height}</height></size>"]
    for tid, cls, (x1, y1, x2, y2) in objs:
        parts.append(
            f"<object><trackid>{tid}</trackid><name>{WNID[cls]}</name>"
            f"<bndbox><xmax>{x2:g}</xmax><xmin>{x1:g}</xmin><ymax>{y2:g}</ymax><ymin>{y1:g}</ymin></bndbox>"
            "<occluded>0</occluded><generated>0</generated></object>"
        )
    parts.append("</annotation>")
    path.write_text("".join(parts))


def write_prediction(path: Path, name: str, frames: dict[int, list[tuple[int | None, str, list[float], float]]]):
    """A vidtag-style CocoVID file: one video, one image per frame, bbox xywh, instance_id when linked."""
    images, anns = [], []
    for f in range(N_FRAMES + 1):  # one frame more than the ground truth has
        images.append({"id": f + 1, "video_id": 1, "frame_id": f, "file_name": f"{name}/{f:06d}", "width": 640, "height": 360, "timestamp": f / 25})
        for tid, cls, (x1, y1, x2, y2), score in frames.get(f, []):
            ann = {
                "id": len(anns) + 1, "image_id": f + 1, "video_id": 1, "category_id": PRED_CLASSES.index(cls) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "score": score,
            }  # fmt: skip
            if tid is not None:
                ann["instance_id"] = tid
                ann["attributes"] = {"track_id": tid}
            anns.append(ann)
    data = {
        "info": {"method": "frame"},
        "videos": [{"id": 1, "name": name, "width": 640, "height": 360, "fps": 25.0, "num_frames": N_FRAMES + 1}],
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(PRED_CLASSES)],
    }
    path.write_text(json.dumps(data))


COCO_NAME = {"car": "car", "domestic_cat": "cat", "bus": "bus"}


@pytest.fixture
def vid_tree(tmp_path):
    """ILSVRC2015/Annotations/VID/val/<2 videos>/%06d.xml and perfect-where-possible predictions."""
    root = tmp_path / "ILSVRC2015"
    val = root / "Annotations" / "VID" / "val"
    preds = tmp_path / "preds"
    preds.mkdir()
    for v in range(2):
        name = f"ILSVRC2015_val_{v:08d}"
        (val / name).mkdir(parents=True)
        frames = {}
        for f in range(N_FRAMES):
            objs = objects_of(v, f)
            write_xml(val / name / f"{f:06d}.xml", objs)
            # Every mappable object found exactly, with a track id; antelope
            # cannot be named by a COCO model; a truck and a person box that
            # the class map drops.
            frames[f] = [(tid + 1, COCO_NAME[cls], box, 0.9) for tid, cls, box in objs if cls in COCO_NAME]
            frames[f] += [(9, "truck", [500, 300, 560, 350], 0.8), (None, "person", [0, 300, 20, 350], 0.7)]
        frames[N_FRAMES] = [(1, "car", [0, 0, 10, 10], 0.9)]  # a frame the ground truth lacks
        write_prediction(preds / f"{name}.coco.json", name, frames)
    return root, preds


def test_end_to_end_vid_fixture(vid_tree):
    root, preds = vid_tree
    res = evaluate(preds, root)
    json.dumps(res, allow_nan=False)  # plain JSON
    vid = res["vid_map"]
    # car, cat, bus found perfectly (AP 1); antelope never (AP 0); the mean
    # runs over the 4 classes present: 3/4.  Over the mapped classes: 1.
    assert vid["per_class"] == {"antelope": 0.0, "bus": 1.0, "car": 1.0, "domestic_cat": 1.0}
    assert vid["all"] == pytest.approx(0.75)
    assert vid["all_mapped"] == pytest.approx(1.0)
    # The car moves 2 px per frame (IoU with neighbours > .9): slow.  The cat
    # moves 30 px per frame on a 60 px box: fast.  Bus and antelope are
    # static: slow.  Every object has a neighbour within 10 frames, so none is
    # unknown.
    assert vid["num_gt"]["unknown"] == 0
    assert vid["per_class_motion"]["fast"] == {"domestic_cat": 1.0}
    assert vid["slow"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)  # car, bus, antelope
    assert res["coco"]["AP"] == pytest.approx(0.75)
    assert res["coco"]["AP50"] == pytest.approx(0.75)
    tr = res["tracking"]
    assert tr["MOTA"] == pytest.approx(1.0) and tr["IDF1"] == pytest.approx(1.0) and tr["HOTA"] == pytest.approx(1.0)
    assert tr["classes"] == ["bus", "car", "domestic_cat"]
    c = res["counts"]
    assert (c["matched_videos"], c["scored_frames"], c["pred_frames_outside_gt"]) == (2, 12, 2)
    assert c["dropped_pred_classes"] == {"person": 12, "truck": 12}
    assert res["class_map"] == {"bus": "bus", "car": "car", "cat": "domestic_cat"}
    rows = format_rows(res)
    assert ("VID", "mAP@0.5", "75.0") in rows and ("Tracking", "MOTA", "100.0") in rows


def test_end_to_end_paths_user_map_and_false_positive(vid_tree, tmp_path):
    root, preds = vid_tree
    one = preds / "ILSVRC2015_val_00000000.coco.json"
    data = json.loads(one.read_text())
    # A high-scoring truck box nowhere near a car, mapped to car by the user:
    # car ranking becomes FP, then 6 TPs -> precision 6/7 at every recall step,
    # so car AP = 6/7.  The other truck boxes are FPs too but rank below all TPs
    # (score .8 < .9), which leaves the interpolated curve unchanged.
    data["annotations"].append(dict(data["annotations"][0], id=999, category_id=PRED_CLASSES.index("truck") + 1, bbox=[600, 300, 20, 20], score=0.99))
    one.write_text(json.dumps(data))
    user_map = tmp_path / "map.csv"
    user_map.write_text("truck,car\n")
    for gt in (root, root / "Annotations" / "VID" / "val", root / "Annotations" / "VID" / "val" / "ILSVRC2015_val_00000000"):
        res = evaluate(one, gt, class_map=user_map)
        assert res["counts"]["matched_videos"] == 1
        assert res["vid_map"]["per_class"]["car"] == pytest.approx(6 / 7)
        assert res["vid_map"]["per_class"]["domestic_cat"] == 1.0
    assert len(res["counts"]["unmatched_gt_videos"]) == 0
    res = evaluate(one, root)
    assert res["counts"]["unmatched_gt_videos"] == ["ILSVRC2015_val_00000001"]
    with pytest.raises(ValueError, match="no prediction video matches"):
        evaluate(one, root / "Annotations" / "VID" / "val" / "ILSVRC2015_val_00000001")


def test_end_to_end_empty_prediction(vid_tree, tmp_path):
    root, _ = vid_tree
    path = tmp_path / "empty" / "ILSVRC2015_val_00000001.coco.json"
    path.parent.mkdir()
    write_prediction(path, "ILSVRC2015_val_00000001", {})
    res = evaluate(path, root)
    assert res["vid_map"]["all"] == 0.0
    assert res["coco"]["AP"] == 0.0
    assert res["tracking"] is None


def test_cli_eval_json(vid_tree, tmp_path):
    from click.testing import CliRunner

    from vidtag.cli import main

    if "eval" not in main.commands:
        pytest.skip("vidtag/cli.py has no `eval` command yet (the lead adds it)")
    root, preds = vid_tree
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["eval", str(preds), str(root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["vid_map"]["all"] == pytest.approx(0.75)
    assert written["tracking"]["MOTA"] == pytest.approx(1.0)
