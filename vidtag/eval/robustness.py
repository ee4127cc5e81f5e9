"""The degraded held-out footage protocol of ``benchmarks/robustness.py``.

Its clips (vtest, bikes; checked against their sha256) split by time into a
training half and a held-out half, the seeded degradation bursts of each
clip, the pseudo ground truth (the per-frame detector's boxes with score >=
:data:`PSEUDO_GT_SCORE` on the clean frames) and pooled COCO AP50 over the
classes with at least :data:`MIN_CLASS_BOXES` pseudo-GT boxes.  The benchmark
scores the held-out halves; ``tools/calibrate_psla.py`` chooses a setting on
the training halves the same way.  The benchmark's docstring gives the
reasons for each choice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Clip:
    """A footage file and where its held-out part starts."""

    name: str
    file: str
    sha256: str

    @staticmethod
    def held_out_start(num_frames: int) -> int:
        """First held-out frame: frames [0, n // 2) are for training, [n // 2, n) held out."""
        return num_frames // 2


CLIPS = (  # the index is the clip's seed offset
    Clip("vtest", "vtest.avi", "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"),
    Clip("bikes", "bikes.mp4", "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
)
BENCH_SEED = 1000
RESERVED_SEEDS = (1000, 1999)  # inclusive; training must not use these
DEGRADED_FRACTION = 0.4
BURST = (3, 8)
PSEUDO_GT_SCORE = 0.4
MIN_CLASS_BOXES = 20  # a class enters the AP50 mean with at least this many pseudo-GT boxes in the scope (the benchmark's docstring says why)
CHUNK_FRAMES = 8  # frames per FrameChunk a detector is handed (the CLI's default batch)


def load_held_out(path: Path, max_frames: int | None, part: str = "held_out") -> tuple[np.ndarray, np.ndarray, int, int]:
    """Decode the held-out frames of ``path`` into memory (``part="training"``: the
    training frames instead, for tools that choose settings without touching the
    held-out ones).

    Returns:
        (frames uint8[T, H, W, 3] RGB, timestamps float64[T], first frame's
        index in the file, frame count of the file).
    """
    from vidtag.io.decode import iter_chunks, probe

    if part not in ("held_out", "training"):
        raise ValueError(f"part must be 'held_out' or 'training', got {part!r}")
    info = probe(path)
    start, end = (Clip.held_out_start(info.num_frames), info.num_frames) if part == "held_out" else (0, Clip.held_out_start(info.num_frames))
    stop = end if max_frames is None else min(end, start + max_frames)
    frames = np.empty((stop - start, info.height, info.width, 3), np.uint8)
    stamps = np.empty(stop - start, np.float64)
    chunks = iter_chunks(path, chunk_size=16, info=info)
    try:
        for chunk in chunks:
            lo, hi = max(chunk.start, start), min(chunk.start + len(chunk), stop)
            if hi > lo:
                frames[lo - start : hi - start] = chunk.frames[lo - chunk.start : hi - chunk.start].cpu().numpy()
                stamps[lo - start : hi - start] = chunk.timestamps[lo - chunk.start : hi - chunk.start]
            if chunk.start + len(chunk) >= stop:
                break
    finally:
        chunks.close()
    return frames, stamps, start, info.num_frames


class HeldOutClip:
    """A clip's clean held-out frames (or, with ``part="training"``, its training
    frames), their degradation schedule and the degraded frames it touches.

    Clip ``index`` of :data:`CLIPS` is degraded with seed ``seed + index``.

    Raises:
        SystemExit: the footage file is not the one whose sha256 SOURCE.md
            gives (the benchmark and the tool stop with this message).
    """

    def __init__(self, clip: Clip, index: int, footage: Path, seed: int, max_frames: int | None, part: str = "held_out"):
        from vidtag.degrade import DegradationSchedule, apply
        from vidtag.weights import file_sha256

        path = footage / clip.file
        digest = file_sha256(path)
        if digest != clip.sha256:
            raise SystemExit(f"{path}: sha256 {digest} is not the one in SOURCE.md ({clip.sha256})")
        self.clip = clip
        self.frames, self.timestamps, self.start, self.file_frames = load_held_out(path, max_frames, part)
        self.seed = seed + index
        self.schedule = DegradationSchedule.sample(len(self.frames), self.seed, DEGRADED_FRACTION, BURST)
        self.mask = self.schedule.mask()
        self.degraded = {i: apply(self.frames[i], self.schedule[i]) for i in np.flatnonzero(self.mask)}

    def __len__(self) -> int:
        return len(self.frames)

    def chunks(self, degraded: bool, timer: list[float]):
        """FrameChunks of :data:`CHUNK_FRAMES` frames; seconds spent building them are added to ``timer[0]``."""
        import torch

        from vidtag.types import FrameChunk

        for s in range(0, len(self.frames), CHUNK_FRAMES):
            t0 = time.perf_counter()
            e = min(s + CHUNK_FRAMES, len(self.frames))
            batch = self.frames[s:e]
            if degraded and self.mask[s:e].any():
                batch = batch.copy()
                for i in range(s, e):
                    if self.mask[i]:
                        batch[i - s] = self.degraded[i]
            chunk = FrameChunk(s, torch.from_numpy(batch), self.timestamps[s:e])
            timer[0] += time.perf_counter() - t0
            yield chunk


def run_model(detector, clip: HeldOutClip, degraded: bool):
    """(list[Detections], model seconds without chunk building, the hard cuts the detector found)."""
    timer = [0.0]
    t0 = time.perf_counter()
    dets = list(detector.run(clip.chunks(degraded, timer)))
    seconds = time.perf_counter() - t0 - timer[0]
    if len(dets) != len(clip):
        raise RuntimeError(f"{detector.method} gave {len(dets)} frames for {len(clip)}")
    return dets, seconds, list(getattr(detector, "shot_starts", ()))


def to_video_boxes(name: str, dets, classes, frame_ids, min_score: float | None = None, width=0, height=0):
    """list[Detections] -> vidtag.eval VideoBoxes over ``frame_ids`` (GT when ``min_score`` is given)."""
    from vidtag.eval.groundtruth import FrameBoxes, VideoBoxes

    frames = {}
    for i in frame_ids:
        d = dets[i]
        if min_score is not None:
            d = d[d.scores >= min_score]
        names = [classes[k] for k in d.labels]
        ids = d.track_ids if d.track_ids is not None else np.full(len(d), -1)
        frames[int(i)] = FrameBoxes(d.boxes, names, ids, None if min_score is not None else d.scores)
    return VideoBoxes(name, frames, width, height)


def box_counts(gt: dict) -> dict[str, int]:
    """Pseudo-GT boxes per class name over the videos in ``gt``."""
    counts: dict[str, int] = {}
    for v in gt.values():
        for f in v.frames.values():
            for c in f.classes:
                counts[c] = counts.get(c, 0) + 1
    return counts


def scored_classes(gt: dict, classes, min_boxes: int = MIN_CLASS_BOXES) -> list[str]:
    """Classes with at least ``min_boxes`` pseudo-GT boxes in ``gt``, in label order: the classes AP50 averages over."""
    counts = box_counts(gt)
    return [c for c in classes if counts.get(c, 0) >= min_boxes]


def ap50(gt: dict, pred: dict, classes, among=None) -> float | None:
    """Pooled COCO AP50 (pycocotools) of the videos in ``gt``, the mean over the classes
    present in the scored GT and, when ``among`` is given, in ``among`` too."""
    from vidtag.eval.coco_ap import coco_ap

    present = sorted({c for v in gt.values() for f in v.frames.values() for c in f.classes}, key=list(classes).index)
    if among is not None:
        keep = set(among)
        present = [c for c in present if c in keep]
    if not present:
        return None
    return coco_ap(gt, pred, {n: n for n in gt}, present)["AP50"]


def ap50_by_class(gt: dict, pred: dict, classes, among=None) -> dict[str, tuple[float | None, int]]:
    """Per class of :func:`ap50`'s set: (pooled COCO AP50 of that class alone, its scored
    ground-truth boxes).  Beside the class mean, the box counts show how much each class
    weighs, and :func:`box_weighted` gives the mean weighted by them."""
    from vidtag.eval.coco_ap import coco_ap

    counts: dict[str, int] = {}
    for video in gt.values():
        for frame in video.frames.values():
            for c, ignored in zip(frame.classes, frame.ignore):
                if not ignored:
                    counts[c] = counts.get(c, 0) + 1
    keep = None if among is None else set(among)
    present = [c for c in classes if c in counts and (keep is None or c in keep)]
    return {c: (coco_ap(gt, pred, {n: n for n in gt}, [c])["AP50"], counts[c]) for c in present}


def box_weighted(per_class: dict[str, tuple[float | None, int]]) -> float | None:
    """The mean of :func:`ap50_by_class`'s APs weighted by their box counts (None if no class scored)."""
    scored = [(ap, n) for ap, n in per_class.values() if ap is not None]
    total = sum(n for _, n in scored)
    return sum(ap * n for ap, n in scored) / total if total else None
