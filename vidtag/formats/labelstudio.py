"""Label Studio video object tracking pre-annotations (``<stem>.labelstudio.json``).

One task, as Label Studio imports it (a JSON list of tasks)::

    [{"data": {"video": "<stem><video suffix>"},
      "predictions": [{"model_version": "vidtag <version> <method>", "score": mean box score,
        "result": [one item per track:
          {"id": "t<track>", "type": "videorectangle", "from_name": "box", "to_name": "video",
           "origin": "prediction",
           "value": {"framesCount": frames, "duration": seconds, "labels": [class],
                     "sequence": [{"frame": 1-based, "time": seconds, "x", "y", "width",
                                   "height" (percent of the frame), "rotation": 0,
                                   "enabled": bool}, ...]}}]}]}]

The labelling config it fits: ``<Video name="video" value="$video"/>`` and
``<VideoRectangle name="box" toName="video"/>`` with ``<Labels name="box"
toName="video">`` holding the class names.  ``data.video`` is the video's
file name: point it where Label Studio serves the file (a URL or
``/data/local-files/?d=...``) before importing.  Every box is a keyframe;
``enabled`` is false on a track's last box and on its last box before a gap,
so Label Studio shows no box where vidtag found none.  Boxes without a track
become one-keyframe tracks.
"""

from __future__ import annotations

from typing import Iterable

from vidtag.formats.base import PIXEL_DECIMALS, SCORE_DECIMALS, TIME_DECIMALS, BufferedSink, FrameRecord, VideoMeta, check_frames, linked_mask, round_float
from vidtag.formats.coco import dumps


def to_labelstudio(meta: VideoMeta, frames: Iterable[FrameRecord]) -> list[dict]:
    """One video's frames -> a one-task Label Studio import list (see the module docstring)."""
    frames = check_frames(meta, frames)
    num_frames = max(meta.num_frames, frames[-1][0] + 1 if frames else 0)
    duration = num_frames / meta.fps if meta.fps > 0 else 0.0
    runs: dict[str, list[tuple[int, float, int, list[float], float]]] = {}
    singles = 0
    for frame_idx, timestamp, dets in frames:
        linked = linked_mask(dets)
        for i in range(len(dets)):
            x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
            pct = [100 * x1 / meta.width, 100 * y1 / meta.height, 100 * (x2 - x1) / meta.width, 100 * (y2 - y1) / meta.height]
            if linked[i]:
                key = f"t{int(dets.track_ids[i])}"
            else:
                singles += 1
                key = f"s{singles}"
            runs.setdefault(key, []).append((int(frame_idx), float(timestamp), int(dets.labels[i]), pct, float(dets.scores[i])))

    results, scores = [], []
    for key, items in runs.items():
        labels = [lab for _, _, lab, _, _ in items]
        sequence = []
        for k, (frame, timestamp, _, (x, y, w, h), score) in enumerate(items):
            last = k + 1 == len(items) or items[k + 1][0] > frame + 1
            sequence.append({"frame": frame + 1, "time": round_float(timestamp, TIME_DECIMALS),
                             "x": round_float(x, PIXEL_DECIMALS), "y": round_float(y, PIXEL_DECIMALS),
                             "width": round_float(w, PIXEL_DECIMALS), "height": round_float(h, PIXEL_DECIMALS),
                             "rotation": 0, "enabled": not last})
            scores.append(score)
        results.append({
            "id": key, "type": "videorectangle", "from_name": "box", "to_name": "video", "origin": "prediction",
            "value": {"framesCount": num_frames, "duration": round_float(duration, TIME_DECIMALS),
                      "labels": [meta.classes[max(set(labels), key=labels.count)]], "sequence": sequence},
        })
    info = meta.info or {}
    model = " ".join(str(v) for v in ("vidtag", info.get("version", ""), info.get("method", "")) if v)
    video = meta.source or meta.name
    score = round_float(sum(scores) / len(scores), SCORE_DECIMALS) if scores else 0.0
    return [{"data": {"video": video}, "predictions": [{"model_version": model, "score": score, "result": results}]}]


class LabelStudioSink(BufferedSink):
    """Writes ``<stem>.labelstudio.json`` on close."""

    def render(self, meta: VideoMeta, frames: list[FrameRecord]) -> bytes:
        return dumps(to_labelstudio(meta, frames))
