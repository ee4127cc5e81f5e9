"""CVAT for video 1.1 XML (``<stem>.cvat.xml``): pre-annotations CVAT imports as tracks.

Layout (CVAT's "CVAT for video 1.1" export format, which its importer reads)::

    <annotations>
      <version>1.1</version>
      <meta><task>
        name, size (frames), mode "interpolation", overlap 0, start_frame 0,
        stop_frame (last frame), labels (every class of the model), original_size
      </task></meta>
      <track id label source="auto">       one per linked track (id from 0)
        <box frame keyframe="1" outside="0" occluded="0" xtl ytl xbr ybr z_order="0">
          <attribute name="score">0.87</attribute>
        </box>
        ...
        <box frame=... outside="1" .../>  the frame after the track's last box, and
                                          the first frame of any gap inside it
      </track>
    </annotations>

Every box is a keyframe, so CVAT shows vidtag's boxes where they were found
and interpolates nothing of its own; an annotator corrects a track by moving
or deleting keyframes.  A track's label is its most frequent class.  Boxes
without a track (``--link none``, or boxes linking left out) become tracks of
one frame each.  Coordinates are source pixels, 2 decimals.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from typing import Iterable

import numpy as np

from vidtag.formats.base import PIXEL_DECIMALS, SCORE_DECIMALS, BufferedSink, FrameRecord, VideoMeta, check_frames, linked_mask


def _box(track: ET.Element, frame: int, xyxy=None, score: float | None = None, outside: bool = False) -> None:
    attrs = {"frame": str(int(frame)), "keyframe": "1", "outside": "1" if outside else "0", "occluded": "0", "z_order": "0"}
    if xyxy is None:
        xyxy = last_box(track)
    for name, value in zip(("xtl", "ytl", "xbr", "ybr"), xyxy):
        attrs[name] = f"{float(value):.{PIXEL_DECIMALS}f}"
    box = ET.SubElement(track, "box", attrs)
    if score is not None:
        ET.SubElement(box, "attribute", {"name": "score"}).text = f"{float(score):.{SCORE_DECIMALS}f}"


def last_box(track: ET.Element) -> tuple[float, float, float, float]:
    """The coordinates of a track element's last box."""
    box = track.findall("box")[-1]
    return tuple(float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))


def to_cvat(meta: VideoMeta, frames: Iterable[FrameRecord]) -> ET.Element:
    """One video's frames -> the ``<annotations>`` element (see the module docstring)."""
    frames = check_frames(meta, frames)
    num_frames = max(meta.num_frames, frames[-1][0] + 1 if frames else 0)
    tracks: dict[int, list[tuple[int, int, np.ndarray, float]]] = {}  # track id -> (frame, label, xyxy, score)
    singles: list[tuple[int, int, np.ndarray, float]] = []
    for frame_idx, _, dets in frames:
        linked = linked_mask(dets)
        for i in range(len(dets)):
            item = (int(frame_idx), int(dets.labels[i]), dets.boxes[i], float(dets.scores[i]))
            if linked[i]:
                tracks.setdefault(int(dets.track_ids[i]), []).append(item)
            else:
                singles.append(item)

    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for key, value in (("name", meta.name), ("size", num_frames), ("mode", "interpolation"), ("overlap", 0),
                       ("start_frame", 0), ("stop_frame", max(num_frames - 1, 0))):
        ET.SubElement(task, key).text = str(value)
    labels = ET.SubElement(task, "labels")
    for name in meta.classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "attributes")
    size = ET.SubElement(task, "original_size")
    ET.SubElement(size, "width").text = str(int(meta.width))
    ET.SubElement(size, "height").text = str(int(meta.height))

    runs = [items for _, items in sorted(tracks.items())] + [[item] for item in singles]
    for track_id, items in enumerate(runs):
        label = Counter(lab for _, lab, _, _ in items).most_common(1)[0][0]
        track = ET.SubElement(root, "track", {"id": str(track_id), "label": meta.classes[label], "source": "auto"})
        previous = None
        for frame, _, xyxy, score in items:
            if previous is not None and frame > previous + 1:
                _box(track, previous + 1, outside=True)  # a gap: hidden until it is seen again
            _box(track, frame, xyxy, score)
            previous = frame
        if previous + 1 < num_frames:
            _box(track, previous + 1, outside=True)
    return root


def dumps_xml(root: ET.Element) -> bytes:
    """Indented UTF-8 XML with its declaration."""
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


class CvatSink(BufferedSink):
    """Writes ``<stem>.cvat.xml`` (CVAT for video 1.1) on close."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return dumps_xml(to_cvat(meta, frames))
