"""Output formats on synthetic detections: write through the sinks, load back."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vidtag.errors import OutputError
from vidtag.formats import FORMATS, SUFFIXES, VideoMeta, open_sink, output_path
from vidtag.formats import coco as coco_fmt
from vidtag.formats import csv as csv_fmt
from vidtag.formats import mot as mot_fmt
from vidtag.types import Detections

CLASSES = ("person", "car", "bicycle")
FILE_FORMATS = [f for f in FORMATS if f != "mp4"]


def make_meta(num_frames: int = 12, name: str = "clip_01") -> VideoMeta:
    return VideoMeta(
        name=name,
        width=640,
        height=360,
        fps=25.0,
        num_frames=num_frames,
        classes=CLASSES,
        info={
            "version": "0.1.0",
            "method": "nanodet",
            "weights": {"name": "nanodet-m.pt", "sha256": "ab" * 32},
            "options": {"threshold": 0.3, "output": Path("/tmp/out")},
        },
    )


def make_frames(num_frames: int = 12, linked: bool = True, seed: int = 0) -> list:
    """Random boxes; some frames empty; when linked, one box per frame left unlinked (-1)."""
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(num_frames):
        n = 0 if f % 4 == 3 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(1, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.uniform(0.05, 1.0, n)
        labels = rng.integers(0, len(CLASSES), n)
        tracks = None
        if linked:
            tracks = rng.permutation(np.arange(1, 9))[:n]
            if n > 1:
                tracks[-1] = -1
        frames.append((f, f / 25.0, Detections(boxes, scores, labels, tracks)))
    return frames


def write_through_sink(fmt: str, tmp_path: Path, meta: VideoMeta, frames: list) -> Path:
    path = output_path(tmp_path, meta.name, fmt)
    with open_sink(fmt, path, meta) as sink:
        assert not sink.needs_frames
        for frame_idx, t, dets in frames:
            sink.write(frame_idx, t, dets)
    assert path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "temporary file left behind"
    return path


def quiet_coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def strict_json(path: Path):
    def no_constant(name):
        raise AssertionError(f"{name} in JSON")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=no_constant)


def assert_rounded(values, decimals):
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v)
        assert round(v, decimals) == v


# ---------------------------------------------------------------- COCO


def test_suffixes_cover_formats():
    from vidtag.formats import SIDECARS

    assert set(SUFFIXES) == set(FORMATS) | set(SIDECARS.values())
    assert output_path("/out", "a", "coco") == Path("/out/a.coco.json")


def test_coco_layout_and_pycocotools(tmp_path):
    from pycocotools.cocoeval import COCOeval

    meta, frames = make_meta(), make_frames()
    path = write_through_sink("coco", tmp_path, meta, frames)
    data = strict_json(path)
    assert set(data) == {"info", "videos", "images", "annotations", "categories"}
    assert data["info"]["weights"]["sha256"] == "ab" * 32
    assert data["info"]["options"]["output"] == "/tmp/out"
    assert data["videos"] == [{"id": 1, "name": "clip_01", "width": 640, "height": 360, "fps": 25.0, "num_frames": 12}]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
    assert len(data["images"]) == 12
    im = data["images"][5]
    assert im == {
        "id": 6, "video_id": 1, "frame_id": 5, "file_name": "clip_01/000005.jpg",
        "width": 640, "height": 360, "timestamp": 0.2,
    }
    n_boxes = sum(len(d) for _, _, d in frames)
    assert len(data["annotations"]) == n_boxes
    assert [a["id"] for a in data["annotations"]] == list(range(1, n_boxes + 1))
    base_keys = {"id", "image_id", "video_id", "category_id", "bbox", "area", "iscrowd", "score"}
    n_linked = 0
    for ann in data["annotations"]:
        assert base_keys <= set(ann) <= base_keys | {"instance_id", "attributes"}
        assert ann["iscrowd"] == 0
        assert_rounded(ann["bbox"] + [ann["area"]], 2)
        assert_rounded([ann["score"]], 4)
        if "instance_id" in ann:
            n_linked += 1
            assert ann["instance_id"] >= 1 and ann["attributes"] == {"track_id": ann["instance_id"]}
    assert n_linked == sum(int((d.track_ids >= 1).sum()) for _, _, d in frames)

    gt = quiet_coco(path)
    assert sorted(gt.getImgIds()) == list(range(1, 13))
    assert len(gt.getAnnIds()) == n_boxes
    dt = coco_fmt.load_results(gt, path)
    assert len(dt.getAnnIds()) == n_boxes
    ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # results == ground truth


def test_coco_read_back(tmp_path):
    meta, frames = make_meta(), make_frames()
    path = write_through_sink("coco", tmp_path, meta, frames)
    meta2, dets, timestamps = coco_fmt.read_coco(path)
    assert (meta2.name, meta2.width, meta2.height, meta2.fps, meta2.num_frames) == ("clip_01", 640, 360, 25.0, 12)
    assert meta2.classes == CLASSES
    assert meta2.info["method"] == "nanodet"
    np.testing.assert_allclose(timestamps, [t for _, t, _ in frames])
    assert len(dets) == len(frames)
    for (_, _, want), got in zip(frames, dets):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.011)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.track_ids, np.where(want.track_ids >= 1, want.track_ids, -1))


def test_coco_unlinked_has_no_instance_id(tmp_path):
    meta, frames = make_meta(), make_frames(linked=False)
    path = write_through_sink("coco", tmp_path, meta, frames)
    data = strict_json(path)
    assert data["annotations"]
    assert all("instance_id" not in a and "attributes" not in a for a in data["annotations"])
    _, dets, _ = coco_fmt.read_coco(path)
    assert all(d.track_ids is None for d in dets)


def test_coco_video_without_detections(tmp_path):
    from pycocotools.cocoeval import COCOeval

    meta = make_meta(num_frames=5)
    frames = [(f, f / 25.0, Detections.empty(with_tracks=True)) for f in range(5)]
    path = write_through_sink("coco", tmp_path, meta, frames)
    data = strict_json(path)
    assert data["annotations"] == [] and len(data["images"]) == 5
    gt = quiet_coco(path)
    assert len(gt.getImgIds()) == 5
    # COCO.loadRes([]) raises; load_results gives an empty result set that
    # COCOeval accepts.
    dt = coco_fmt.load_results(gt, coco_fmt.to_results(data))
    assert dt.getAnnIds() == [] and sorted(dt.getImgIds()) == [1, 2, 3, 4, 5]
    ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    meta2, dets, timestamps = coco_fmt.read_coco(path)
    assert meta2.num_frames == 5 and len(dets) == 5 and all(len(d) == 0 for d in dets)
    assert len(timestamps) == 5


def test_coco_empty_results_against_ground_truth(tmp_path):
    """A video where the model found nothing, evaluated against real ground truth."""
    from pycocotools.cocoeval import COCOeval

    meta, frames = make_meta(), make_frames()
    gt = quiet_coco(write_through_sink("coco", tmp_path, meta, frames))
    dt = coco_fmt.load_results(gt, [])
    ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == 0.0


def test_coco_num_frames_follows_frames_written(tmp_path):
    meta, frames = make_meta(num_frames=20), make_frames(12)
    data = strict_json(write_through_sink("coco", tmp_path, meta, frames))
    assert data["videos"][0]["num_frames"] == 12 == len(data["images"])


def test_coco_converter_is_pure():
    meta, frames = make_meta(), make_frames()
    data = coco_fmt.to_coco(meta, frames)
    assert data == coco_fmt.to_coco(meta, iter(frames))
    meta2, dets, _ = coco_fmt.from_coco(json.loads(coco_fmt.dumps(data)))
    assert meta2.classes == CLASSES and len(dets) == len(frames)


def test_non_finite_box_is_rejected(tmp_path):
    meta = make_meta(num_frames=1)
    path = tmp_path / "x.coco.json"
    sink = open_sink("coco", path, meta)
    sink.write(0, 0.0, Detections([[0, 0, np.nan, 5]], [0.5], [0]))
    with pytest.raises(ValueError, match="non-finite"):
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_label_outside_classes_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        coco_fmt.to_coco(make_meta(), [(0, 0.0, Detections([[0, 0, 1, 1]], [0.5], [3]))])


# ---------------------------------------------------------------- MOT


def check_trackeval_rules(text: str, num_frames: int) -> np.ndarray:
    """The checks TrackEval's MOTChallenge loader applies to a tracker file."""
    rows = []
    for line in text.splitlines():
        fields = line.split(",")
        assert len(fields) == 10, line
        values = [float(v) for v in fields]  # every column numeric
        assert all(math.isfinite(v) for v in values), line
        frame, track = values[0], values[1]
        assert frame == int(frame) and 1 <= frame <= num_frames, line
        assert track == int(track) and track >= 1, line
        assert values[4] >= 0 and values[5] >= 0, line
        assert values[7:] == [-1, -1, -1], line  # class column <= 1 for MOT17
        rows.append(values)
    table = np.array(rows, dtype=np.float64).reshape(-1, 10)
    pairs = {(int(r[0]), int(r[1])) for r in table}
    assert len(pairs) == len(table), "an id occurs twice in one frame"
    keys = [(int(r[0]), int(r[1])) for r in table]
    assert keys == sorted(keys)
    return table


def test_mot_txt(tmp_path):
    meta, frames = make_meta(), make_frames()
    path = write_through_sink("mot", tmp_path, meta, frames)
    table = check_trackeval_rules(path.read_text(), meta.num_frames)
    want = []
    for f, _, d in frames:
        for i in np.flatnonzero(d.track_ids >= 1):
            x1, y1, x2, y2 = d.boxes[i]
            want.append([f + 1, d.track_ids[i], x1, y1, x2 - x1, y2 - y1, d.scores[i]])
    want = np.array(sorted(want, key=lambda r: (r[0], r[1])))
    assert len(table) == len(want) > 0
    np.testing.assert_allclose(table[:, :2], want[:, :2])
    np.testing.assert_allclose(table[:, 2:6], want[:, 2:6], atol=0.011)
    np.testing.assert_allclose(table[:, 6], want[:, 6], atol=1e-4)
    assert mot_fmt.to_mot_lines(meta, frames) == path.read_text().splitlines()


@pytest.mark.parametrize("linked", [False, True])
def test_mot_without_tracked_boxes(tmp_path, linked):
    meta = make_meta()
    frames = make_frames(linked=False) if not linked else [
        (f, f / 25.0, Detections([[0, 0, 5, 5]], [0.5], [0], [-1])) for f in range(12)
    ]
    path = output_path(tmp_path, meta.name, "mot")
    with open_sink("mot", path, meta) as sink:
        for f in frames:
            sink.write(*f)
    assert path.read_text() == ""
    jpath = output_path(tmp_path, meta.name, "mot-json")
    with open_sink("mot-json", jpath, meta) as sink:
        for f in frames:
            sink.write(*f)
    assert strict_json(jpath) == []


def test_mot_rejects_repeated_track_in_frame():
    dets = Detections([[0, 0, 5, 5], [10, 10, 20, 20]], [0.5, 0.6], [0, 1], [3, 3])
    with pytest.raises(ValueError, match="twice"):
        mot_fmt.to_mot_lines(make_meta(), [(0, 0.0, dets)])


def test_mot_json(tmp_path):
    meta, frames = make_meta(), make_frames()
    path = write_through_sink("mot-json", tmp_path, meta, frames)
    items = strict_json(path)
    assert items == mot_fmt.to_mot_json(meta, frames)
    keys = {"video_id", "image_id", "frame_id", "track_id", "category_id", "category", "bbox", "score"}
    assert all(set(it) == keys for it in items)
    order = [(it["frame_id"], it["track_id"]) for it in items]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert all(it["image_id"] == it["frame_id"] + 1 and it["track_id"] >= 1 for it in items)
    assert all(it["category"] == CLASSES[it["category_id"] - 1] for it in items)
    assert len(items) == sum(int((d.track_ids >= 1).sum()) for _, _, d in frames)
    # Same boxes as the MOT txt file, and a valid COCO results list for the COCO file.
    lines = mot_fmt.to_mot_lines(meta, frames)
    for it, line in zip(items, lines):
        values = [float(v) for v in line.split(",")]
        assert values[:2] == [it["frame_id"] + 1, it["track_id"]]
        assert values[2:7] == it["bbox"] + [it["score"]]
    gt_path = tmp_path / "gt.coco.json"
    gt_path.write_bytes(coco_fmt.dumps(coco_fmt.to_coco(meta, frames)))
    gt = quiet_coco(gt_path)
    assert len(coco_fmt.load_results(gt, path).getAnnIds()) == len(items)


# ---------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path):
    meta, frames = make_meta(name="0042"), make_frames()  # a stem that looks like a number
    path = write_through_sink("csv", tmp_path, meta, frames)
    assert path.read_text().splitlines()[0] == "video,frame,time_s,track_id,class_id,class_name,score,x1,y1,x2,y2"
    df = csv_fmt.to_dataframe(meta, frames)
    back = csv_fmt.read_csv(path)
    pd.testing.assert_frame_equal(back, df)
    assert str(back["track_id"].dtype) == "Int64"
    assert back["frame"].dtype == np.int64 and back["class_id"].dtype == np.int64
    assert (back["video"] == "0042").all()

    n_boxes = sum(len(d) for _, _, d in frames)
    assert len(df) == n_boxes
    tracks = np.concatenate([d.track_ids for _, _, d in frames])
    assert int(df["track_id"].isna().sum()) == int((tracks < 1).sum()) > 0
    np.testing.assert_array_equal(df["track_id"].dropna().to_numpy(dtype=np.int64), tracks[tracks >= 1])

    # Plain pandas.read_csv gives the same values (track_id as float with NaN).
    plain = pd.read_csv(path, dtype={"video": str})
    assert list(plain.columns) == list(csv_fmt.COLUMNS)
    for col in ("frame", "time_s", "class_id", "score", "x1", "y1", "x2", "y2"):
        np.testing.assert_array_equal(plain[col].to_numpy(), df[col].to_numpy())
    np.testing.assert_array_equal(plain["track_id"].to_numpy(), df["track_id"].to_numpy(dtype=float, na_value=np.nan))

    # class_id is the COCO category_id of the same box.
    coco = coco_fmt.to_coco(meta, frames)
    np.testing.assert_array_equal(df["class_id"].to_numpy(), [a["category_id"] for a in coco["annotations"]])
    assert (df["class_name"] == [CLASSES[c - 1] for c in df["class_id"]]).all()
    boxes = np.concatenate([d.boxes for _, _, d in frames])
    np.testing.assert_allclose(df[["x1", "y1", "x2", "y2"]].to_numpy(), boxes, atol=0.006)


def test_csv_unlinked_and_empty(tmp_path):
    meta = make_meta()
    df = csv_fmt.read_csv(write_through_sink("csv", tmp_path, meta, make_frames(linked=False)))
    assert len(df) > 0 and df["track_id"].isna().all() and str(df["track_id"].dtype) == "Int64"

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    frames = [(f, f / 25.0, Detections.empty()) for f in range(4)]
    path = write_through_sink("csv", empty_dir, meta, frames)
    assert path.read_text() == ",".join(csv_fmt.COLUMNS) + "\n"
    back = csv_fmt.read_csv(path)
    pd.testing.assert_frame_equal(back, csv_fmt.to_dataframe(meta, frames))
    assert len(back) == 0 and str(back["track_id"].dtype) == "Int64"


# ---------------------------------------------------------------- sink protocol


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_abort_leaves_nothing(tmp_path, fmt):
    meta, frames = make_meta(), make_frames()
    path = output_path(tmp_path, meta.name, fmt)
    sink = open_sink(fmt, path, meta)
    for f in frames[:5]:
        sink.write(*f)
    sink.abort()
    sink.abort()
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(RuntimeError, match="boom"):
        with open_sink(fmt, path, meta) as sink:
            sink.write(*frames[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_unwritable_path_raises_and_leaves_nothing(tmp_path, fmt):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    path = blocker / f"clip{SUFFIXES[fmt]}"
    with pytest.raises(OutputError, match="cannot write") as err:
        open_sink(fmt, path, make_meta())
    assert str(path) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]
    with pytest.raises(OutputError):
        open_sink(fmt, tmp_path / "missing" / "clip.csv", make_meta())


def test_replaces_old_file_and_close_is_idempotent(tmp_path):
    meta, frames = make_meta(), make_frames()
    path = output_path(tmp_path, meta.name, "csv")
    path.write_text("old")
    sink = open_sink("csv", path, meta)
    assert path.read_text() == "old"  # untouched until close
    for f in frames:
        sink.write(*f)
    sink.close()
    sink.close()
    assert path.read_text().startswith("video,")
    with pytest.raises(ValueError, match="after close"):
        sink.write(99, 0.0, Detections.empty())
    sink.abort()  # after close: keeps the completed file
    assert path.exists()


def test_frames_must_increase(tmp_path):
    sink = open_sink("mot", tmp_path / "a.mot.txt", make_meta())
    sink.write(0, 0.0, Detections.empty())
    with pytest.raises(ValueError, match="after frame 0"):
        sink.write(0, 0.0, Detections.empty())
    sink.abort()


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        open_sink("yaml", tmp_path / "a", make_meta())
    assert list(tmp_path.iterdir()) == []


def test_coco_weights_get_cocos_official_category_ids_everywhere(tmp_path):
    """COCO's 80 classes number 1-90 with gaps (stop sign 13, toothbrush 90) in the COCO,
    MOT JSON and CSV files alike; the COCO file reads back to the model's class indices."""
    from vidtag.coco_classes import COCO_CLASSES
    from vidtag.formats.coco import from_coco

    meta = replace(make_meta(2), classes=COCO_CLASSES)
    labels = np.array([COCO_CLASSES.index(c) for c in ("person", "stop sign", "toothbrush")])
    dets = Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], float), np.array([0.9, 0.8, 0.7]),
                      labels, np.array([1, 2, 3]))
    frames = [(0, 0.0, dets), (1, 0.04, dets)]
    for fmt in ("coco", "mot-json", "csv"):
        (tmp_path / fmt).mkdir()
    coco = strict_json(write_through_sink("coco", tmp_path / "coco", meta, frames))
    ids = {c["name"]: c["id"] for c in coco["categories"]}
    assert (ids["person"], ids["stop sign"], ids["parking meter"], ids["dining table"], ids["toothbrush"]) == (1, 13, 14, 67, 90)
    assert [a["category_id"] for a in coco["annotations"][:3]] == [1, 13, 90]
    mot = strict_json(write_through_sink("mot-json", tmp_path / "mot-json", meta, frames))
    assert [it["category_id"] for it in mot[:3]] == [1, 13, 90]
    table = pd.read_csv(write_through_sink("csv", tmp_path / "csv", meta, frames))
    assert table["class_id"].tolist()[:3] == [1, 13, 90]
    _, back, _ = from_coco(coco)
    np.testing.assert_array_equal(back[0].labels, labels)


def test_the_coco_results_list_loads_with_pycocotools_loadres(tmp_path):
    """Beside the COCO file, its annotations as a results list: COCO.loadRes(path) takes it as is."""
    from pycocotools.coco import COCO

    meta, frames = make_meta(), make_frames()
    coco_path = write_through_sink("coco", tmp_path, meta, frames)
    (tmp_path / "r").mkdir()
    results_path = write_through_sink("coco-results", tmp_path / "r", meta, frames)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_path))
        res = gt.loadRes(str(results_path))
    data = strict_json(coco_path)
    assert len(res.anns) == len(data["annotations"]) > 0
    assert sorted((a["image_id"], a["category_id"], a["score"]) for a in res.anns.values()) == sorted(
        (a["image_id"], a["category_id"], a["score"]) for a in data["annotations"])


def test_cvat_xml_holds_one_track_per_linked_track_with_gaps_and_ends_marked_outside(tmp_path):
    """Track 1 on frames 0-2 and 5 (a gap at 3-4), track 2 on frames 1-2, an unlinked box on
    frame 4: CVAT tracks with keyframes, outside boxes where each disappears, labels by class."""
    import xml.etree.ElementTree as ET

    def dets(rows):  # (track, label, x1) per box
        boxes = np.array([[x, 10, x + 20, 40] for _, _, x in rows], float).reshape(-1, 4)
        return Detections(boxes, np.full(len(rows), 0.5), np.array([lab for _, lab, _ in rows], np.int64),
                          np.array([t for t, _, _ in rows], np.int64))

    per_frame = {0: [(1, 0, 0)], 1: [(1, 0, 2), (2, 1, 100)], 2: [(1, 0, 4), (2, 1, 102)], 3: [], 4: [(-1, 2, 50)], 5: [(1, 0, 10)]}
    meta = make_meta(7)
    path = write_through_sink("cvat", tmp_path, meta, [(f, f / 25, dets(per_frame.get(f, []))) for f in range(7)])
    root = ET.parse(path).getroot()
    assert root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert (task.findtext("size"), task.findtext("stop_frame"), task.findtext("original_size/width")) == ("7", "6", "640")
    assert [lab.findtext("name") for lab in task.findall("labels/label")] == list(CLASSES)
    tracks = root.findall("track")
    assert [(t.get("id"), t.get("label")) for t in tracks] == [("0", "person"), ("1", "car"), ("2", "bicycle")]

    def boxes(track):
        return [(int(b.get("frame")), b.get("outside"), float(b.get("xtl"))) for b in track.findall("box")]

    assert boxes(tracks[0]) == [(0, "0", 0.0), (1, "0", 2.0), (2, "0", 4.0), (3, "1", 4.0), (5, "0", 10.0), (6, "1", 10.0)]
    assert boxes(tracks[1]) == [(1, "0", 100.0), (2, "0", 102.0), (3, "1", 102.0)]
    assert boxes(tracks[2]) == [(4, "0", 50.0), (5, "1", 50.0)]
    assert all(b.get("keyframe") == "1" for t in tracks for b in t.findall("box"))
    assert tracks[0].find("box/attribute[@name='score']").text == "0.5000"


def test_labelstudio_tracks_are_videorectangles_with_one_based_frames_and_gaps_disabled(tmp_path):
    """Track 1 on frames 0-1 and 4 (a gap), an unlinked box on frame 2: percent coordinates,
    1-based frames, enabled false on the last box before a gap and on a track's last box."""
    boxes = {0: [(1, 0, [64, 36, 128, 108])], 1: [(1, 0, [70, 36, 134, 108])], 2: [(-1, 1, [0, 0, 320, 180])],
             4: [(1, 2, [80, 36, 144, 108])]}
    frames = []
    for f in range(6):
        rows = boxes.get(f, [])
        frames.append((f, f / 25, Detections(np.array([b for _, _, b in rows], float).reshape(-1, 4), np.full(len(rows), 0.5),
                                             np.array([lab for _, lab, _ in rows], np.int64), np.array([t for t, _, _ in rows], np.int64))))
    meta = replace(make_meta(6), source="clip_01.mkv")
    tasks = strict_json(write_through_sink("labelstudio", tmp_path, meta, frames))
    assert len(tasks) == 1 and tasks[0]["data"] == {"video": "clip_01.mkv"}
    result = tasks[0]["predictions"][0]["result"]
    assert [r["type"] for r in result] == ["videorectangle"] * 2 and all(r["to_name"] == "video" for r in result)
    track, single = result
    assert track["value"]["labels"] == ["person"] and single["value"]["labels"] == ["car"]
    assert track["value"]["framesCount"] == 6 and track["value"]["duration"] == 0.24
    seq = track["value"]["sequence"]
    assert [(s["frame"], s["enabled"]) for s in seq] == [(1, True), (2, False), (5, False)]
    assert (seq[0]["x"], seq[0]["y"], seq[0]["width"], seq[0]["height"]) == (10.0, 10.0, 10.0, 20.0)  # of 640x360
    assert [(s["frame"], s["enabled"], s["width"]) for s in single["value"]["sequence"]] == [(3, False, 50.0)]
