"""``vidtag export``: a finished run's boxes as a training set or annotation-tool files.

Reads the run's ``vidtag-run.json`` and each finished video's ``.coco.json``;
detection does not run again.  The source videos are decoded again only for
the image exports.  Targets:

* ``yolo``: every ``every``-th frame as ``images/train/<name>_<frame:06d>.jpg``
  with ``labels/train/<same>.txt`` (``class cx cy w h``, normalised to the
  frame, class = the model's 0-based class index; boxes scoring below
  ``min_score`` left out) and ``data.yaml`` (``path``, ``train``, ``val`` =
  the same images, ``names``): what ``yolo train data=OUT/data.yaml`` reads.
* ``coco-images``: the same frames in COCO's dataset layout,
  ``images/default/<name>/<frame:06d>.jpg`` (the COCO file's own
  ``file_name``s, under ``images/default/``) and
  ``annotations/instances_default.json``, a COCO dataset of those images.
* ``cvat``, ``labelstudio``: the formats of the same names
  (:mod:`vidtag.formats.cvat`, :mod:`vidtag.formats.labelstudio`), per video.

A video whose results or source are missing is reported and skipped; the
others are exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vidtag.errors import VidtagError

TARGETS = ("yolo", "coco-images", "cvat", "labelstudio")


@dataclass
class ExportSummary:
    """What :func:`export_run` wrote: ``videos`` exported, ``images`` and ``boxes``
    written (image targets), ``skipped`` one line per video left out."""

    videos: int = 0
    images: int = 0
    boxes: int = 0
    skipped: list[str] = field(default_factory=list)


def export_run(run_dir: str | Path, output: str | Path, to: str, every: int = 1, min_score: float = 0.0) -> ExportSummary:
    """Export the finished videos of the run in ``run_dir`` into ``output`` as ``to`` (one of :data:`TARGETS`).

    Raises:
        VidtagError: no run manifest in ``run_dir``, or an unknown target.
        ValueError: ``every`` < 1 or ``min_score`` outside [0, 1].
    """
    from vidtag.batch import MANIFEST_NAME
    from vidtag.formats.coco import from_coco

    if to not in TARGETS:
        raise VidtagError(f"unknown export target {to!r}: choose from {', '.join(TARGETS)}")
    if every < 1 or not 0.0 <= min_score <= 1.0:
        raise ValueError(f"--every must be >= 1 and --min-score in [0, 1], got {every} and {min_score}")
    run_dir, output = Path(run_dir), Path(output)
    manifest = run_dir / MANIFEST_NAME
    try:
        records = json.loads(manifest.read_text())["videos"]
    except (OSError, ValueError, KeyError) as err:
        raise VidtagError(f"{manifest}: not a readable vidtag run manifest ({type(err).__name__})") from None
    output.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary()
    dataset = {"images": [], "annotations": [], "categories": []}
    classes: tuple[str, ...] = ()
    for record in records:
        name = record.get("output_name") or record.get("stem")
        coco_file = (record.get("outputs") or {}).get("coco", {}).get("file")
        if record.get("status") not in ("done", "skipped") or not coco_file:
            summary.skipped.append(f"{record.get('path')}: no finished COCO results in this run")
            continue
        data = json.loads((run_dir / coco_file).read_text())
        meta, dets, timestamps = from_coco(data)
        meta = replace(meta, name=name, source=Path(record["path"]).name)
        frame_ids = sorted(im["frame_id"] for im in data["images"])
        if to in ("cvat", "labelstudio"):
            _write_format(to, output, meta, frame_ids, timestamps, dets)
        else:
            source = Path(record["path"])
            if not source.is_file():
                summary.skipped.append(f"{source}: source video not found; its frames cannot be exported")
                continue
            classes = meta.classes
            kept = [(f, d[d.scores >= min_score]) for f, d in zip(frame_ids, dets) if f % every == 0]
            written = _write_images(to, output, name, source, kept, meta, data, dataset)
            summary.images += written
            summary.boxes += sum(len(d) for _, d in kept)
        summary.videos += 1
    if to == "yolo" and classes:
        names = "\n".join(f"  {i}: {json.dumps(c)}" for i, c in enumerate(classes))
        (output / "data.yaml").write_text(f"path: {output.resolve()}\ntrain: images/train\nval: images/train\nnames:\n{names}\n")
    if to == "coco-images":
        (output / "annotations").mkdir(exist_ok=True)
        (output / "annotations" / "instances_default.json").write_text(json.dumps(dataset))
    return summary


def _write_format(fmt: str, output: Path, meta, frame_ids, timestamps, dets) -> None:
    from vidtag.formats import open_sink, output_path

    path = output_path(output, meta.name, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_sink(fmt, path, meta) as sink:
        for frame, t, d in zip(frame_ids, timestamps, dets):
            sink.write(frame, float(t), d)


def _write_images(to: str, output: Path, name: str, source: Path, kept, meta, data: dict, dataset: dict) -> int:
    """Decode ``source``, write the frames of ``kept`` ((frame id, Detections)) as JPEG
    with their labels (yolo) or into ``dataset`` (coco-images); returns the images written."""
    import cv2

    from vidtag.coco_classes import category_ids
    from vidtag.io.decode import iter_chunks

    wanted = dict(kept)
    ids = category_ids(meta.classes)
    if not dataset["categories"]:
        dataset["categories"] = data["categories"]
    written = 0
    for chunk in iter_chunks(source, chunk_size=8):
        pixels = chunk.frames.numpy()
        for k in range(len(chunk)):
            frame = chunk.start + k
            if frame not in wanted:
                continue
            dets = wanted[frame]
            height, width = pixels[k].shape[:2]
            if to == "yolo":
                stem = f"{name.replace('/', '_')}_{frame:06d}"
                image = output / "images" / "train" / f"{stem}.jpg"
                label = output / "labels" / "train" / f"{stem}.txt"
            else:
                image = output / "images" / "default" / f"{name}/{frame:06d}.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(image), np.ascontiguousarray(pixels[k][..., ::-1])):
                raise VidtagError(f"{image}: cannot write")
            if to == "yolo":
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("".join(_yolo_line(int(c), b, width, height) for c, b in zip(dets.labels, dets.boxes)))
            else:
                image_id = len(dataset["images"]) + 1
                dataset["images"].append({"id": image_id, "file_name": f"{name}/{frame:06d}.jpg", "width": width, "height": height})
                for c, b, s in zip(dets.labels, dets.boxes, dets.scores):
                    w, h = float(b[2] - b[0]), float(b[3] - b[1])
                    dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": image_id,
                                                   "category_id": ids[int(c)], "bbox": [float(b[0]), float(b[1]), w, h],
                                                   "area": w * h, "iscrowd": 0, "score": float(s)})
            written += 1
    return written


def _yolo_line(label: int, box, width: int, height: int) -> str:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    return f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n"
