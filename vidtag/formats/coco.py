"""COCO video annotations in the CocoVID layout (mmtracking, CVAT).

File layout (``<stem>.coco.json``)::

    info:        the run record (tool version, method, weights, options)
    videos:      [{id: 1, name, width, height, fps, num_frames}]
    images:      [{id, video_id, frame_id, file_name, width, height, timestamp}]
                 one per frame; id = frame_id + 1; frame_id from 0;
                 file_name = "<stem>/<frame_id:06d>.jpg"; timestamp in seconds
    annotations: [{id, image_id, video_id, category_id, bbox: [x, y, w, h],
                   area, iscrowd: 0, score, instance_id, attributes: {track_id}}]
                 id from 1; bbox in source pixels, top-left origin;
                 instance_id / attributes.track_id: the linked track (from 1),
                 present only when linking ran and the box is linked
    categories:  [{id, name, supercategory}]; id: COCO's official id for COCO's
                 80 classes (vidtag.coco_classes), the class index + 1 otherwise

Numbers are plain floats rounded to 0.01 px (bbox, area), 1e-4 (score) and
1 us (timestamp).  The file loads with ``pycocotools.coco.COCO``; use
:func:`load_results` rather than ``COCO.loadRes`` to load results that may be
empty.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from vidtag.coco_classes import category_ids
from vidtag.formats.base import (
    PIXEL_DECIMALS,
    SCORE_DECIMALS,
    TIME_DECIMALS,
    BufferedSink,
    FrameRecord,
    VideoMeta,
    check_frames,
    linked_mask,
    round_float,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from vidtag.types import Detections

VIDEO_ID = 1
SUPERCATEGORY = "object"


def image_id(frame_idx: int) -> int:
    """COCO image id of a frame: frame index + 1 (ids from 1)."""
    return int(frame_idx) + 1


def file_name(stem: str, frame_idx: int) -> str:
    """``<stem>/<frame_idx:06d>.jpg``, the CocoVID image name of a frame (where
    ``vidtag export --to coco-images`` writes it)."""
    return f"{stem}/{int(frame_idx):06d}.jpg"


def json_safe(value):
    """``value`` as plain JSON types; unknown objects (paths, enums) become strings."""
    return json.loads(json.dumps(value, default=str, allow_nan=False))


def to_coco(meta: VideoMeta, frames: Iterable[FrameRecord]) -> dict:
    """Convert one video's frames to a CocoVID dict (see the module docstring).

    Args:
        meta: the video; ``meta.num_frames`` goes to ``videos[0].num_frames``.
        frames: (frame index from 0, timestamp in s, Detections) in increasing
            frame order; every frame becomes an image, with or without boxes.

    Returns:
        dict ready for ``json.dump``: only plain ints, floats, strings.
    """
    frames = check_frames(meta, frames)
    ids = category_ids(meta.classes)
    images = []
    annotations = []
    for frame_idx, timestamp, dets in frames:
        img_id = image_id(frame_idx)
        images.append(
            {
                "id": img_id,
                "video_id": VIDEO_ID,
                "frame_id": int(frame_idx),
                "file_name": file_name(meta.name, frame_idx),
                "width": int(meta.width),
                "height": int(meta.height),
                "timestamp": round_float(timestamp, TIME_DECIMALS),
            }
        )
        linked = linked_mask(dets)
        xywh = xyxy_to_xywh(dets.boxes)
        for i in range(len(dets)):
            bbox = [round_float(v, PIXEL_DECIMALS) for v in xywh[i]]
            ann = {
                "id": len(annotations) + 1,
                "image_id": img_id,
                "video_id": VIDEO_ID,
                "category_id": ids[int(dets.labels[i])],
                "bbox": bbox,
                "area": round_float(max(bbox[2], 0.0) * max(bbox[3], 0.0), PIXEL_DECIMALS),
                "iscrowd": 0,
                "score": round_float(dets.scores[i], SCORE_DECIMALS),
            }
            if linked[i]:
                track = int(dets.track_ids[i])
                ann["instance_id"] = track
                ann["attributes"] = {"track_id": track}
            annotations.append(ann)
    return {
        "info": json_safe(dict(meta.info)),
        "videos": [
            {
                "id": VIDEO_ID,
                "name": meta.name,
                "width": int(meta.width),
                "height": int(meta.height),
                "fps": round_float(meta.fps, TIME_DECIMALS),
                "num_frames": int(meta.num_frames),
            }
        ],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": ids[i], "name": name, "supercategory": SUPERCATEGORY}
            for i, name in enumerate(meta.classes)
        ],
    }


def dumps(data) -> bytes:
    """Compact, strict JSON (no NaN), UTF-8."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def from_coco(data: dict) -> tuple[VideoMeta, list[Detections], np.ndarray]:
    """Inverse of :func:`to_coco` for a one-video CocoVID dict.

    Returns:
        meta: rebuilt from ``videos[0]``, ``categories`` (sorted by id) and ``info``.
        dets: one :class:`Detections` per image, in ``frame_id`` order; labels
            are category positions in id order (the model's class indices for
            files vidtag wrote).  When any
            annotation has ``instance_id`` every frame gets ``track_ids`` (-1
            for boxes without one); otherwise ``track_ids`` is None.
        timestamps (float64[F]): each image's ``timestamp`` (``frame_id / fps``
            when absent).
    """
    video = data["videos"][0]
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    meta = VideoMeta(
        name=str(video["name"]),
        width=int(video["width"]),
        height=int(video["height"]),
        fps=float(video["fps"]),
        num_frames=int(video.get("num_frames", len(data["images"]))),
        classes=tuple(c["name"] for c in categories),
        info=data.get("info", {}),
    )
    images = sorted(data["images"], key=lambda im: im["frame_id"])
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
    for ann in data.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    linked = any("instance_id" in ann for ann in data.get("annotations", []))
    dets = []
    for im in images:
        anns = by_image[im["id"]]
        boxes = xywh_to_xyxy(np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4))
        dets.append(
            Detections(
                boxes,
                np.array([a.get("score", 1.0) for a in anns], dtype=np.float32),
                np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
                np.array([a.get("instance_id", -1) for a in anns], dtype=np.int64) if linked else None,
            )
        )
    fps = meta.fps if meta.fps > 0 else 1.0
    timestamps = np.array([im.get("timestamp", im["frame_id"] / fps) for im in images], dtype=np.float64)
    return meta, dets, timestamps


def read_coco(path: str | Path) -> tuple[VideoMeta, list[Detections], np.ndarray]:
    """Read a ``.coco.json`` file written by :class:`CocoSink`; see :func:`from_coco`."""
    with open(path, encoding="utf-8") as f:
        return from_coco(json.load(f))


def to_results(data: dict) -> list[dict]:
    """The annotations of a CocoVID dict as a COCO results list.

    Each item is ``{image_id, category_id, bbox, score}``, the format that
    ``COCO.loadRes`` and ``COCOeval`` take.
    """
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": a["score"]}
        for a in data.get("annotations", [])
    ]


def load_results(coco_gt, results):
    """``coco_gt.loadRes(results)`` that also accepts an empty result list.

    pycocotools' ``loadRes`` fails with an IndexError on an empty list, which
    is what a video without any detection gives.  Evaluating such a video is
    legitimate (every ground-truth box is a miss), so an empty results COCO
    object is built instead: same images and categories, no annotations.

    Args:
        coco_gt (pycocotools.coco.COCO): the ground truth.
        results: a results list, or a path to a JSON file holding one (a
            ``.mot.json`` file qualifies), or a CocoVID dict whose
            annotations are taken (see :func:`to_results`).

    Returns:
        pycocotools.coco.COCO holding the results.
    """
    from pycocotools.coco import COCO

    if isinstance(results, (str, Path)):
        with open(results, encoding="utf-8") as f:
            results = json.load(f)
    if isinstance(results, dict):
        results = to_results(results)
    # pycocotools prints progress to stdout; a library stays quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        if len(results) > 0:
            return coco_gt.loadRes(results)
        empty = COCO()
        empty.dataset = {
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": list(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        empty.createIndex()
        return empty


class CocoSink(BufferedSink):
    """Writes ``<stem>.coco.json`` (CocoVID layout) on close."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return dumps(to_coco(meta, frames))


class CocoResultsSink(BufferedSink):
    """Writes ``<stem>.coco-results.json`` on close: :func:`to_results` of the COCO file,
    the list ``COCO.loadRes`` takes (pycocotools refuses an empty one: use
    :func:`load_results` for a video without boxes)."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return dumps(to_results(to_coco(meta, frames)))
