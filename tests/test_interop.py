"""vidtag's files imported by another tool's own library: datumaro, the dataset library
behind CVAT (its cvat, coco_instances, mot_seq and yolo importers).  Each test checks
frames, boxes and tracks after the import, not only that the file parses."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import pytest

from tests.cli import FAST_DETECT as FAST
from tests.cli import detect_clip, invoke
dm = pytest.importorskip("datumaro")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out, coco = detect_clip(tmp_path_factory.mktemp("interop"), 10, "cvat", "mot")
    assert any("instance_id" in a for a in coco["annotations"])  # the clip gives tracks at this threshold
    return out, coco


def _coco_boxes(coco):
    """vidtag's COCO file as frame -> [(x, y, w, h)] and (frame, track) -> box."""
    frame_of = {im["id"]: im["frame_id"] for im in coco["images"]}
    boxes, tracks = defaultdict(list), {}
    for a in coco["annotations"]:
        frame = frame_of[a["image_id"]]
        boxes[frame].append(tuple(a["bbox"]))
        if "instance_id" in a:
            tracks[frame, a["instance_id"]] = tuple(a["bbox"])
    return dict(boxes), tracks


def _bbox(ann):
    return tuple(ann.get_bbox())


def _same_boxes(got, want, tol=0.05):
    """Two lists of (x, y, w, h) pair up one to one within ``tol`` px (files round to 0.01 px)."""
    left = list(want)
    for box in got:
        match = next((w for w in left if all(abs(g - v) <= tol for g, v in zip(box, w))), None)
        if match is None:
            return False
        left.remove(match)
    return not left


def test_cvat_file_imports_as_the_same_boxes_and_one_track_per_track(run):
    out, coco = run
    dataset = dm.Dataset.import_from(str(out / "walk.cvat.xml"), "cvat")
    items = {int(item.attributes["frame"]): item for item in dataset}
    assert sorted(items) == list(range(10))
    shown = {f: [a for a in item.annotations if not a.attributes.get("outside")] for f, item in items.items()}  # outside: hidden
    want, want_tracks = _coco_boxes(coco)
    got = {f: [_bbox(a) for a in anns] for f, anns in shown.items() if anns}
    assert got.keys() == want.keys() and all(_same_boxes(got[f], want[f]) for f in want)
    # one vidtag track is one CVAT track: the frames datumaro groups under a track_id are one vidtag track's
    groups = defaultdict(list)
    for f, anns in shown.items():
        for a in anns:
            groups[a.attributes["track_id"]].append(f)
    tracks = defaultdict(list)
    for f, track in sorted(want_tracks):
        tracks[track].append(f)
    singles = [[f] for f, boxes in want.items() for _ in range(len(boxes) - sum(1 for g, _ in want_tracks if g == f))]
    assert sorted(sorted(g) for g in groups.values()) == sorted(list(tracks.values()) + singles)
    labels = dataset.categories()[dm.AnnotationType.label]
    assert [labels[i].name for i in range(len(labels))] == [c["name"] for c in coco["categories"]]


def test_mot_file_imports_as_mot_seq_with_the_tracks(run, tmp_path):
    out, coco = run
    (tmp_path / "seq" / "gt").mkdir(parents=True)
    shutil.copy(out / "walk.mot.txt", tmp_path / "seq" / "gt" / "gt.txt")
    dataset = dm.Dataset.import_from(str(tmp_path / "seq"), "mot_seq")
    _, want_tracks = _coco_boxes(coco)
    got = {(int(item.id) - 1, a.attributes["track_id"]): _bbox(a) for item in dataset for a in item.annotations}
    assert got.keys() == want_tracks.keys()
    assert all(_same_boxes([got[k]], [want_tracks[k]]) for k in got)


def test_yolo_export_imports_with_the_same_boxes(run, tmp_path):
    out, coco = run
    assert invoke("export", out, "--to", "yolo", "-o", tmp_path / "y").exit_code == 0
    dataset = dm.Dataset.import_from(str(tmp_path / "y"), "yolo")
    want, _ = _coco_boxes(coco)
    got = {int(item.id.rsplit("_", 1)[1]): [_bbox(a) for a in item.annotations] for item in dataset if item.annotations}
    assert got.keys() == want.keys()
    assert all(_same_boxes(got[f], want[f], tol=0.1) for f in want)  # YOLO keeps normalised centres to 1e-6


def test_coco_images_export_imports_as_coco_instances(run, tmp_path):
    out, coco = run
    assert invoke("export", out, "--to", "coco-images", "-o", tmp_path / "c").exit_code == 0
    dataset = dm.Dataset.import_from(str(tmp_path / "c"), "coco_instances")
    assert len(dataset) == 10 and all(item.media.has_data for item in dataset)
    assert sum(len(item.annotations) for item in dataset) == len(coco["annotations"])


def test_labelstudio_predictions_validate_against_a_tracking_config(run, tmp_path):
    """Label Studio's own validator (label_studio_sdk's LabelInterface) accepts the predictions for a video
    tracking config with the run's classes, and refuses them when a label is missing from the config."""
    ls = pytest.importorskip("label_studio_sdk.label_interface")
    out, coco = run
    assert invoke("detect", out.parent / "walk.mp4", "-o", tmp_path / "ls", "--format", "labelstudio", *FAST).exit_code == 0
    tasks = json.loads((tmp_path / "ls" / "walk.labelstudio.json").read_text())
    assert tasks[0]["data"] == {"video": "walk.mp4"}
    prediction = tasks[0]["predictions"][0]
    used = sorted({r["value"]["labels"][0] for r in prediction["result"]})
    assert len(prediction["result"]) == len({a["instance_id"] for a in coco["annotations"] if "instance_id" in a}) + sum(
        1 for a in coco["annotations"] if "instance_id" not in a)  # one region per track, one per unlinked box

    def config(labels):
        return ('<View><Video name="video" value="$video"/><Labels name="box" toName="video">'
                + "".join(f'<Label value="{c}"/>' for c in labels) + '</Labels><VideoRectangle name="box" toName="video"/></View>')

    assert ls.LabelInterface(config([c["name"] for c in coco["categories"]])).validate_prediction(prediction)
    assert not ls.LabelInterface(config(used[1:])).validate_prediction(prediction)
