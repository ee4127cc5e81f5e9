"""Load ground truth and predictions into one internal form.

Every loader returns ``dict[str, VideoBoxes]`` keyed by video name.  A
:class:`VideoBoxes` holds the annotated frames of one video by ``frame_id``
(from 0); a :class:`FrameBoxes` holds one frame's boxes as numpy arrays:
``xyxy`` pixels, class *names* (not ids, so ground truth and predictions from
different label spaces can be compared after :mod:`vidtag.eval.classmap`),
track ids and, for predictions, scores.

Ground truth sources:

* a CocoVID JSON (``videos`` / ``images`` with ``frame_id`` / ``annotations``
  with ``instance_id``); a plain COCO JSON without ``videos`` is read as one
  video named after the file;
* an ImageNet VID annotation folder: ``Annotations/VID/val/<video>/%06d.xml``.
  The dataset root, ``Annotations/VID``, ``Annotations/VID/val`` or one
  ``<video>`` folder are all accepted.

Predictions: vidtag ``.coco.json`` files (CocoVID, one or several videos per
file), a folder of them, or a list of paths.

Box coordinates.  ImageNet VID XML ``xmin ymin xmax ymax`` are taken as
continuous pixel coordinates (width = ``xmax - xmin``), the convention
mmtracking uses when it converts VID to CocoVID, so both ground-truth sources
give the same numbers for the same data.  FGFA's evaluator adds one pixel to
widths and heights (the legacy VOC convention); that shifts IoU slightly for
very small boxes and is not reproduced.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

VID_CLASSES: tuple[str, ...] = (
    "airplane", "antelope", "bear", "bicycle", "bird", "bus", "car", "cattle",
    "dog", "domestic_cat", "elephant", "fox", "giant_panda", "hamster", "horse",
    "lion", "lizard", "monkey", "motorcycle", "rabbit", "red_panda", "sheep",
    "snake", "squirrel", "tiger", "train", "turtle", "watercraft", "whale", "zebra",
)  # fmt: skip
"""The 30 ImageNet VID classes in the dataset's order."""

VID_WNIDS: dict[str, str] = dict(
    zip(
        (
            "n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116",
            "n02958343", "n02402425", "n02084071", "n02121808", "n02503517", "n02118333",
            "n02510455", "n02342885", "n02374451", "n02129165", "n01674464", "n02484322",
            "n03790512", "n02324045", "n02509815", "n02411705", "n01726692", "n02355227",
            "n02129604", "n04468005", "n01662784", "n04530566", "n02062744", "n02391049",
        ),
        VID_CLASSES,
    )
)  # fmt: skip
"""WordNet id -> VID class name."""


@dataclass(frozen=True)
class FrameBoxes:
    """The boxes of one frame, ground truth or prediction.

    Attributes:
        boxes (float64[N, 4]): x1, y1, x2, y2 in pixels, origin top-left.
        classes (object[N]): class name (str) of each box.
        track_ids (int64[N]): track id per box; -1 where the box has none.
        scores (float64[N] | None): confidence of predictions; None for
            ground truth.
        ignore (bool[N]): ground-truth boxes that count neither as a hit nor a
            miss (COCO ``iscrowd``); all False for predictions.
    """

    boxes: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray
    scores: np.ndarray | None = None
    ignore: np.ndarray | None = None

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        classes = np.empty(n, dtype=object)
        classes[:] = [str(c) for c in self.classes] if n else []
        track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        ignore = np.zeros(n, bool) if self.ignore is None else np.asarray(self.ignore, dtype=bool).reshape(-1)
        if len(classes) != n or len(track_ids) != n or len(ignore) != n:
            raise ValueError(f"FrameBoxes: {n} boxes but {len(classes)} classes, {len(track_ids)} track ids, {len(ignore)} ignore flags")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "track_ids", track_ids)
        object.__setattr__(self, "ignore", ignore)
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(scores) != n:
                raise ValueError(f"FrameBoxes: {n} boxes but {len(scores)} scores")
            object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "FrameBoxes":
        """Select boxes with a boolean mask or an index array."""
        return FrameBoxes(
            self.boxes[index],
            self.classes[index],
            self.track_ids[index],
            None if self.scores is None else self.scores[index],
            self.ignore[index],
        )

    @classmethod
    def empty(cls, with_scores: bool = False) -> "FrameBoxes":
        return cls(np.zeros((0, 4)), [], np.zeros(0, np.int64), np.zeros(0) if with_scores else None)


@dataclass
class VideoBoxes:
    """The annotated frames of one video.

    Attributes:
        name: video name (CocoVID ``videos[].name`` or the VID folder name).
        frames: ``frame_id`` (from 0) -> :class:`FrameBoxes`.  For ground
            truth every annotated frame is present, also frames without
            objects; a frame missing from a prediction means no detections.
        width, height: frame size in pixels when known, else 0.
    """

    name: str
    frames: dict[int, FrameBoxes] = field(default_factory=dict)
    width: int = 0
    height: int = 0

    @property
    def num_boxes(self) -> int:
        return sum(len(f) for f in self.frames.values())

    def class_names(self) -> set[str]:
        return {c for f in self.frames.values() for c in f.classes}


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """boxes (float[N, 4]) x, y, w, h -> float64[N, 4] x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """boxes (float[N, 4]) x1, y1, x2, y2 -> float64[N, 4] x, y, w, h."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


# ---------------------------------------------------------------- CocoVID JSON


def from_cocovid(data: dict, default_name: str = "video", with_scores: bool = False) -> dict[str, VideoBoxes]:
    """Convert a CocoVID (or plain COCO) dict to videos.

    Args:
        data: ``{videos?, images, annotations, categories}``.  Images carry
            ``video_id`` and ``frame_id``; without ``videos`` every image
            belongs to one video called ``default_name`` and, without
            ``frame_id``, frames are numbered by image id order from 0.
        default_name: name of the single video of a file without ``videos``.
        with_scores: read ``score`` (predictions; 1.0 where missing).

    Returns:
        name -> VideoBoxes.  Annotations with ``iscrowd`` set are kept with
        ``ignore`` True.  ``instance_id`` (or ``attributes.track_id``) gives
        the track id, -1 when absent.
    """
    cat_name = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
    videos_raw = data.get("videos") or [{"id": None, "name": default_name}]
    names = {}
    videos: dict[str, VideoBoxes] = {}
    for v in videos_raw:
        name = str(v.get("name", v.get("id")))
        if name in videos:
            raise ValueError(f"two videos named {name!r} in one file")
        names[v.get("id")] = name
        videos[name] = VideoBoxes(name, {}, int(v.get("width", 0) or 0), int(v.get("height", 0) or 0))
    single = data.get("videos") is None or len(videos_raw) == 1
    images = sorted(data.get("images", []), key=lambda im: im["id"])
    image_key: dict = {}
    counters: dict = {}
    for im in images:
        vid = None if data.get("videos") is None else im.get("video_id", videos_raw[0]["id"] if single else None)
        if vid not in names:
            raise ValueError(f"image {im['id']} refers to unknown video_id {vid!r}")
        frame_id = im.get("frame_id")
        if frame_id is None:
            frame_id = counters.get(vid, 0)
        counters[vid] = max(counters.get(vid, 0), int(frame_id) + 1)
        image_key[im["id"]] = (names[vid], int(frame_id))
        video = videos[names[vid]]
        if not video.width and im.get("width"):
            video.width, video.height = int(im["width"]), int(im.get("height", 0))
    per_frame: dict[tuple[str, int], list[dict]] = {key: [] for key in image_key.values()}
    for ann in data.get("annotations", []):
        if ann["image_id"] not in image_key:
            raise ValueError(f"annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}")
        per_frame[image_key[ann["image_id"]]].append(ann)
    for (name, frame_id), anns in per_frame.items():
        classes = []
        for a in anns:
            if a["category_id"] not in cat_name:
                raise ValueError(f"annotation {a.get('id')} has unknown category_id {a['category_id']}")
            classes.append(cat_name[a["category_id"]])
        tracks = [a.get("instance_id", (a.get("attributes") or {}).get("track_id", -1)) for a in anns]
        videos[name].frames[frame_id] = FrameBoxes(
            xywh_to_xyxy([a["bbox"] for a in anns]),
            classes,
            [-1 if t is None else int(t) for t in tracks],
            [float(a.get("score", 1.0)) for a in anns] if with_scores else None,
            [bool(a.get("iscrowd", 0)) for a in anns],
        )
    for video in videos.values():
        video.frames = dict(sorted(video.frames.items()))
    return videos


def _json_stem(path: Path) -> str:
    name = path.name
    for suffix in (".coco.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_cocovid(path: str | Path, with_scores: bool = False) -> dict[str, VideoBoxes]:
    """Read a CocoVID / COCO JSON file; see :func:`from_cocovid`."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{path}: not a COCO / CocoVID file (no 'images')")
    return from_cocovid(data, default_name=_json_stem(path), with_scores=with_scores)


# ---------------------------------------------------------------- ImageNet VID


def vid_class_name(name: str) -> str:
    """A VID ``<name>`` (WordNet id, or already a class name) -> class name."""
    name = name.strip()
    return VID_WNIDS.get(name, name)


def parse_vid_xml(path: str | Path) -> tuple[FrameBoxes, int, int]:
    """Read one ImageNet VID frame annotation.

    Returns:
        (FrameBoxes with track ids from ``trackid`` and class names from the
        WordNet ids, width, height); width and height are 0 when ``size`` is
        missing.
    """
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = int(size.findtext("width", "0")) if size is not None else 0
    height = int(size.findtext("height", "0")) if size is not None else 0
    boxes, classes, tracks = [], [], []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            continue
        boxes.append([float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        classes.append(vid_class_name(obj.findtext("name", "")))
        tracks.append(int(obj.findtext("trackid", "-1")))
    return FrameBoxes(np.array(boxes, dtype=np.float64).reshape(-1, 4), classes, tracks), width, height


def load_vid_video(folder: str | Path) -> VideoBoxes:
    """Read ``<video>/%06d.xml``; the frame id is the file's number."""
    folder = Path(folder)
    video = VideoBoxes(folder.name)
    for xml in sorted(folder.glob("*.xml")):
        try:
            frame_id = int(xml.stem)
        except ValueError:
            raise ValueError(f"{xml}: expected a frame number as file name (%06d.xml)") from None
        frame, width, height = parse_vid_xml(xml)
        video.frames[frame_id] = frame
        if width and not video.width:
            video.width, video.height = width, height
    video.frames = dict(sorted(video.frames.items()))
    return video


def find_vid_folder(path: str | Path) -> Path:
    """The folder that holds the video folders (or the xml files of one video).

    Accepts the dataset root (``.../ILSVRC2015``), ``Annotations``,
    ``Annotations/VID``, ``Annotations/VID/val`` or a single ``<video>``.
    """
    path = Path(path)
    for candidate in (path / "Annotations" / "VID" / "val", path / "VID" / "val", path / "val", path):
        if candidate.is_dir() and (any(candidate.glob("*.xml")) or any(candidate.glob("*/*.xml"))):
            return candidate
    raise ValueError(f"{path}: no ImageNet VID annotations (<video>/%06d.xml) found")


def load_imagenet_vid(path: str | Path) -> dict[str, VideoBoxes]:
    """Read ImageNet VID XML annotations; see :func:`find_vid_folder`."""
    folder = find_vid_folder(path)
    if any(folder.glob("*.xml")):
        video = load_vid_video(folder)
        return {video.name: video}
    videos = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.xml"))):
        videos[sub.name] = load_vid_video(sub)
    return videos


# ---------------------------------------------------------------- entry points


@dataclass
class GroundTruth:
    """Ground-truth videos and their label space.

    Attributes:
        videos: name -> VideoBoxes.
        classes: every class name of the label space, in the dataset's order
            (the 30 VID classes; or COCO ``categories`` by id), followed by
            any name found in the boxes but not declared.
    """

    videos: dict[str, VideoBoxes]
    classes: tuple[str, ...]


def _with_present(declared, videos: dict[str, VideoBoxes]) -> tuple[str, ...]:
    present = set().union(*(v.class_names() for v in videos.values())) if videos else set()
    declared = list(dict.fromkeys(declared))
    return tuple(declared + sorted(present - set(declared)))


def load_groundtruth(path: str | Path) -> GroundTruth:
    """Ground truth from a CocoVID / COCO JSON file or an ImageNet VID folder."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: ground truth not found")
    if path.is_dir():
        videos = load_imagenet_vid(path)
        return GroundTruth(videos, _with_present(VID_CLASSES, videos))
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{path}: not a COCO / CocoVID file (no 'images')")
    videos = from_cocovid(data, default_name=_json_stem(path), with_scores=False)
    declared = [str(c["name"]) for c in sorted(data.get("categories", []), key=lambda c: c["id"])]
    return GroundTruth(videos, _with_present(declared, videos))


def load_predictions(paths: str | Path | Sequence[str | Path]) -> dict[str, VideoBoxes]:
    """Predictions from vidtag ``.coco.json`` files.

    Args:
        paths: one file, a folder (every ``*.coco.json`` in it, recursively),
            or a list of files / folders.

    Returns:
        name -> VideoBoxes with scores.  A file without ``videos`` is one
        video named after the file (``<stem>.coco.json`` -> ``<stem>``).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.coco.json")))
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"{p}: predictions not found")
    if not files:
        raise ValueError(f"no .coco.json predictions in {', '.join(map(str, paths))}")
    videos: dict[str, VideoBoxes] = {}
    for f in files:
        for name, video in load_cocovid(f, with_scores=True).items():
            if name in videos:
                raise ValueError(f"{f}: video {name!r} appears in two prediction files")
            videos[name] = video
    return videos


def _keys(name: str) -> Iterable[str]:
    """Ever looser names a video may go by: exact, last path part, without extension."""
    base = PurePosixPath(name.replace("\\", "/")).name
    yield name
    yield base
    yield base.split(".")[0] if base.split(".")[0] else base


def match_videos(pred: dict[str, VideoBoxes], gt: dict[str, VideoBoxes]) -> tuple[dict[str, str], list[str], list[str]]:
    """Pair prediction videos with ground-truth videos by name.

    Names are compared exactly first, then by their last path component, then
    without extension (``val/ILSVRC2015_val_00000000`` and
    ``ILSVRC2015_val_00000000.mp4`` both match ``ILSVRC2015_val_00000000``).
    A looser key is used only when it is unique on both sides.

    Returns:
        (gt name -> pred name, unmatched gt names, unmatched pred names).
    """
    pairs: dict[str, str] = {}
    free_pred = set(pred)
    for level in range(3):
        gt_index: dict[str, list[str]] = {}
        for g in gt:
            if g not in pairs:
                gt_index.setdefault(list(_keys(g))[level], []).append(g)
        pred_index: dict[str, list[str]] = {}
        for p in free_pred:
            pred_index.setdefault(list(_keys(p))[level], []).append(p)
        for key, gs in gt_index.items():
            ps = pred_index.get(key, [])
            if len(gs) == 1 and len(ps) == 1:
                pairs[gs[0]] = ps[0]
                free_pred.discard(ps[0])
    unmatched_gt = sorted(g for g in gt if g not in pairs)
    return dict(sorted(pairs.items())), unmatched_gt, sorted(free_pred)
