"""vidtag export: a finished run's boxes as a YOLO training set, COCO images, CVAT and Label Studio files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli import FAST_DETECT as FAST
from tests.cli import detect_clip, invoke


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out, coco = detect_clip(tmp_path_factory.mktemp("export"), 8)
    assert coco["annotations"]  # the clip gives boxes at this threshold
    return out, coco


def test_yolo_export_writes_sampled_frames_labels_and_data_yaml(tmp_path, run):
    out, coco = run
    result = invoke("export", out, "--to", "yolo", "-o", tmp_path / "y", "--every", "2", "--min-score", "0.1")
    assert result.exit_code == 0, result.stderr
    images = sorted(p.name for p in (tmp_path / "y" / "images" / "train").iterdir())
    assert images == [f"walk_{f:06d}.jpg" for f in (0, 2, 4, 6)]
    by_frame = {im["id"]: im["frame_id"] for im in coco["images"]}
    for f in (0, 2, 4, 6):
        lines = (tmp_path / "y" / "labels" / "train" / f"walk_{f:06d}.txt").read_text().splitlines()
        want = [a for a in coco["annotations"] if by_frame[a["image_id"]] == f and a["score"] >= 0.1]
        assert len(lines) == len(want)
        got = sorted((int(c), float(cx)) for c, cx, *_ in (line.split() for line in lines))
        ids = [c["id"] for c in coco["categories"]]
        want_rows = sorted((ids.index(a["category_id"]), (a["bbox"][0] + a["bbox"][2] / 2) / 96) for a in want)
        assert [c for c, _ in got] == [c for c, _ in want_rows]
        assert [x for _, x in got] == pytest.approx([x for _, x in want_rows], abs=1e-3)
        assert all(0.0 <= float(v) <= 1.0 for line in lines for v in line.split()[1:])
    yaml = (tmp_path / "y" / "data.yaml").read_text()
    assert "train: images/train" in yaml and '0: "person"' in yaml


def test_coco_images_export_names_files_that_exist(tmp_path, run):
    from pycocotools.coco import COCO

    out, coco = run
    assert invoke("export", out, "--to", "coco-images", "-o", tmp_path / "c").exit_code == 0
    dataset = COCO(str(tmp_path / "c" / "annotations" / "instances_default.json"))
    images = tmp_path / "c" / "images" / "default"
    assert len(dataset.imgs) == 8 and len(dataset.anns) == len(coco["annotations"])
    for image in dataset.imgs.values():
        assert (images / image["file_name"]).is_file()
    first = next(iter(dataset.anns.values()))
    pixel = __import__("cv2").imread(str(images / dataset.imgs[first["image_id"]]["file_name"]))
    assert pixel.shape == (64, 96, 3)


def _same(a, b, tol=0.02):
    """Equal structures; numbers within ``tol`` (the COCO file keeps x, y, w, h to 0.01 px, so
    boxes rebuilt from it can differ by a rounding step)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= tol
    return a == b


def _xml_tree(path):
    import xml.etree.ElementTree as ET

    def node(e):
        attrs = {k: float(v) if k in ("xtl", "ytl", "xbr", "ybr") else v for k, v in e.attrib.items()}
        return [e.tag, attrs, (e.text or "").strip(), [node(c) for c in e]]

    return node(ET.parse(path).getroot())


@pytest.mark.parametrize("target,suffix", [("cvat", ".cvat.xml"), ("labelstudio", ".labelstudio.json")])
def test_tool_exports_equal_what_detect_writes(tmp_path, run, target, suffix):
    out, _ = run
    assert invoke("export", out, "--to", target, "-o", tmp_path / "t").exit_code == 0
    direct = tmp_path / "direct"
    assert invoke("detect", out.parent / "walk.mp4", "-o", direct, "--format", target, *FAST).exit_code == 0
    exported, written = tmp_path / "t" / f"walk{suffix}", direct / f"walk{suffix}"
    if target == "cvat":
        assert _same(_xml_tree(exported), _xml_tree(written))
    else:  # percent of a 96 x 64 frame: 0.01 px is at most 0.02 %
        assert _same(json.loads(exported.read_text()), json.loads(written.read_text()), tol=0.05)


def test_a_folder_without_a_run_is_a_one_line_error(tmp_path):
    result = invoke("export", tmp_path, "--to", "yolo", "-o", tmp_path / "o")
    assert result.exit_code != 0 and "vidtag-run.json" in result.output + result.stderr
    assert np.all([len(line) < 300 for line in (result.output + result.stderr).splitlines()])
