"""Output formats: one sink per format, pure converters beside them.

============  =====================  ==========================================
CLI name      suffix                 module
============  =====================  ==========================================
``coco``      ``.coco.json``         :mod:`vidtag.formats.coco` (CocoVID), and beside it
              ``.coco-results.json`` its annotations as a COCO results list
``mot``       ``.mot.txt``           :mod:`vidtag.formats.mot` (MOTChallenge)
``mot-json``  ``.mot.json``          :mod:`vidtag.formats.mot` (TAO-style)
``csv``       ``.tracks.csv``        :mod:`vidtag.formats.csv`
``mp4``       ``.annotated.mp4``     :mod:`vidtag.formats.video`
``cvat``      ``.cvat.xml``          :mod:`vidtag.formats.cvat` (CVAT for video 1.1; on request)
``labelstudio`` ``.labelstudio.json`` :mod:`vidtag.formats.labelstudio` (video tracking; on request)
============  =====================  ==========================================

Every sink is a context manager fed ``write(frame_idx, timestamp_s, dets,
frame=None)`` for frames 0..N-1 in order; ``close()`` completes the file
atomically, ``abort()`` leaves nothing.  Class numbering is the same in all
files: COCO ``category_id`` = MOT JSON ``category_id`` = CSV ``class_id``
(:func:`vidtag.coco_classes.category_ids`).
"""

from __future__ import annotations

from pathlib import Path

from vidtag.formats.base import DEFAULT_FORMATS, FORMATS, SIDECARS, SUFFIXES, Sink, VideoMeta


def open_sink(fmt: str, path: str | Path, meta: VideoMeta, **kwargs) -> Sink:
    """Open the sink of format ``fmt`` (one of :data:`FORMATS`) writing ``path``.

    ``kwargs`` go to the sink; only ``mp4`` takes any (see
    :class:`vidtag.formats.video.VideoSink`: ``timestamps``, ``audio_source``,
    ``encoder_factory``, ``crf``, ``preset``).

    Raises:
        ValueError: unknown format.
        vidtag.errors.OutputError: the file cannot be created.
    """
    if fmt == "coco":
        from vidtag.formats.coco import CocoSink as sink_class
    elif fmt == "coco-results":
        from vidtag.formats.coco import CocoResultsSink as sink_class
    elif fmt == "mot":
        from vidtag.formats.mot import MotSink as sink_class
    elif fmt == "mot-json":
        from vidtag.formats.mot import MotJsonSink as sink_class
    elif fmt == "csv":
        from vidtag.formats.csv import CsvSink as sink_class
    elif fmt == "mp4":
        from vidtag.formats.video import VideoSink as sink_class
    elif fmt == "cvat":
        from vidtag.formats.cvat import CvatSink as sink_class
    elif fmt == "labelstudio":
        from vidtag.formats.labelstudio import LabelStudioSink as sink_class
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    return sink_class(path, meta, **kwargs)


def output_path(output_dir: str | Path, stem: str, fmt: str) -> Path:
    """``OUTPUT_DIR/<stem><suffix>`` for format ``fmt``."""
    return Path(output_dir) / f"{stem}{SUFFIXES[fmt]}"


__all__ = ["DEFAULT_FORMATS", "FORMATS", "SIDECARS", "SUFFIXES", "Sink", "VideoMeta", "open_sink", "output_path"]
