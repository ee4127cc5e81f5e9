"""The degraded held-out footage protocol of ``benchmarks/robustness.py``, and its scoring.

Its clips (vtest, bikes; checked against their sha256) split by time into a
training half and a held-out half, the seeded degradation bursts of each
clip, the pseudo ground truth (the per-frame detector's boxes with score >=
:data:`PSEUDO_GT_SCORE` on the clean frames) and pooled COCO AP50 over the
classes with at least :data:`MIN_CLASS_BOXES` pseudo-GT boxes in the frames a
column scores.  The benchmark scores the held-out halves;
``tools/calibrate_psla.py`` chooses a setting on the training halves the same
way.  The benchmark's docstring gives the reasons for each choice.

Beyond the protocol, the benchmark's steps: the settings it runs
(:func:`parse_settings`, :func:`build_detectors`), every detector on every
clip (:class:`Runs`), the pseudo ground truth (:class:`PseudoGT`), the
accuracy columns (:func:`score_column`, :func:`score_scope`,
:func:`score_settings`), the diagnostics (:func:`seqnms_diagnostics`,
:func:`lower_conf_diagnostic`, :func:`per_class_degraded`,
:func:`per_kind_ap50`) and the markdown tables (each diagnostic returns its
figures and its table lines).  Plotting stays in the script.
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


# --------------------------------------------------------------------------- settings

RUNTIME = "torch"  # every method on one engine, the reference (the committed figures were measured there); vidtag detect's default is in bench_runtime.py
CANDIDATE_METHODS = ("frame", "psla", "iff")  # the order of the table; vidtag.types.METHODS decides what runs
DEFAULT_LINKS = ("none", "seqnms+")

# Variants of a temporal method: ``psla:KEY=VALUE[:KEY=VALUE]`` (the shipped PSLA modules, an
# inference-time change) and ``iff:KEY=VALUE`` (window, or the shipped modules of another IFF-Net
# variant: the basic module, the modules trained without TRL).
VARIANT_KEYS = {
    "psla": {"d": ("max_displacement", int), "k": ("key_interval", int), "rfu": ("use_rfu", lambda v: v == "1"),
             "denseft": ("use_denseft", lambda v: v == "1"), "scale": ("displacement_scaling", str),
             "cut": ("cut_threshold", float), "qbias": ("quality_bias", float)},
    "iff": {"w": ("window", int), "module": ("module", str), "trl": ("trl", lambda v: v == "1"), "modules": ("modules", str),
            "cut": ("cut_threshold", float)},
}
# Table 5 of the paper on our data: PSLA alone, + RFU, + DenseFT (= psla), then d = 2..5 (d = 4 is psla).
# Then the same reach at every level or not (PSLAConfig.displacement_scaling); one of the two is psla itself;
# then without the hard-cut split (cut=0, vidtag.shots) and with the Quality Net as trained (qbias=0,
# PSLAConfig.quality_bias; the shipped manifest calibrates it on the training halves).
ABLATION = ("psla:rfu=0:denseft=0", "psla:denseft=0", "psla:d=2", "psla:d=3", "psla:d=5", "psla:scale=none", "psla:scale=stride",
            "psla:cut=0", "psla:qbias=0")
# IFF-Net's speed-accuracy curve: window 4 / 10 / 20 (= iff), and the paper's Table 2 rows (IFF-Net-A: basic
# module without TRL, -B: basic with TRL, -C: advanced with TRL = iff) plus the advanced module without TRL;
# then the training recipe: the paper's (modules=paper: 3-frame softmax, no temperature) and the learned
# temperature without the window-matched softmax (modules=temperature).
IFF_CURVE = ("iff:w=4", "iff:w=10", "iff:module=basic", "iff:module=basic:trl=0", "iff:trl=0",
             "iff:modules=paper", "iff:modules=temperature", "iff:cut=0")  # cut=0: windows cross hard cuts


def parse_variant(spec: str) -> tuple[str, dict]:
    """'psla:d=2:rfu=0' -> ('psla', {'max_displacement': 2, 'use_rfu': False}); 'frame' -> ('frame', {}).

    Raises:
        SystemExit: a part is not KEY=VALUE with a KEY of :data:`VARIANT_KEYS` for the method.
    """
    base, *parts = spec.split(":")
    keys = VARIANT_KEYS.get(base, {})
    options = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key not in keys or not value:
            raise SystemExit(f"bad variant {part!r} in {spec!r}: use KEY=VALUE with KEY in {', '.join(keys) or '(none for ' + base + ')'}")
        name, cast = keys[key]
        options[name] = cast(value)
    return base, options


def build_variant(spec: str, options, device):
    """The detector of a setting's method: ``build_detector`` with the variant's options."""
    from vidtag.models.build import IFF_WEIGHTS, DetectorSettings, build_detector
    from vidtag.weights import default_weights_dir

    base, variant = parse_variant(spec)
    if base != "iff":
        return build_detector(DetectorSettings(base, None, options, device, psla_options=variant or None, runtime=RUNTIME))[0]
    weights = None
    if variant.pop("trl", True) is False:  # the same module trained without TRL: '-notrl' before '-nanodet-g'
        weights = default_weights_dir() / IFF_WEIGHTS[variant.get("module", "advanced")].replace("-nanodet-g", "-notrl-nanodet-g")
    recipe = variant.pop("modules", None)
    if recipe is not None:  # other shipped modules of the same shape: weights/iff-<recipe>-nanodet-g.json
        if weights is not None:
            raise SystemExit(f"setting {spec!r}: modules= names its own weights; it cannot be combined with trl=0")
        weights = default_weights_dir() / f"iff-{recipe}-nanodet-g.json"
    return build_detector(DetectorSettings(base, None, options, device, iff_options=variant or None, iff_weights=weights, runtime=RUNTIME))[0]


def parse_settings(text: str | None, available, ablation: bool = False, iff_curve: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """'frame,frame+seqnms+,psla:d=2' -> [(method, link)], notes on skipped ones; ``ablation`` adds
    :data:`ABLATION`, ``iff_curve`` :data:`IFF_CURVE` (without linking).  ``None``: every method of
    :data:`CANDIDATE_METHODS` and ``available`` with each link of :data:`DEFAULT_LINKS`.  A method
    whose base is not in ``available`` is skipped with a note; repeated settings run once."""
    from vidtag.linking import METHODS as LINKS

    if text:
        wanted = []
        for item in text.split(","):
            method, _, link = item.strip().partition("+")
            wanted.append((method, link or "none"))
    else:
        wanted = [(m, l) for m in dict.fromkeys(CANDIDATE_METHODS + tuple(available)) for l in DEFAULT_LINKS]
    if ablation:
        wanted += [(m, "none") for m in ABLATION]
    if iff_curve:
        wanted += [(m, "none") for m in IFF_CURVE]
    settings, notes = [], []
    for method, link in wanted:
        if link not in LINKS:
            raise SystemExit(f"unknown linking {link!r} in --methods: choose from {', '.join(LINKS)}")
        if parse_variant(method)[0] not in available:
            note = f"{method}: skipped, not in vidtag.models.build.METHODS ({', '.join(available)})"
            if note not in notes:
                notes.append(note)
            continue
        settings.append((method, link))
    return list(dict.fromkeys(settings)), notes


def setting_name(method: str, link: str) -> str:
    """('psla', 'none') -> 'psla'; ('psla', 'seqnms+') -> 'psla+seqnms+'."""
    return method if link == "none" else f"{method}+{link}"


def build_detectors(methods, options, device, notes: list[str], build=build_variant) -> dict:
    """method -> detector for each of ``methods`` that ``build(method, options, device)`` builds.

    A method that fails to build is left out with a note; so is a variant that only
    restates its base method's shipped config and modules (e.g. psla:scale=stride is
    psla itself): it would run twice.  Notes are appended to ``notes``.
    """
    from vidtag.errors import WeightsError

    detectors = {}
    for m in methods:
        try:
            detectors[m] = build(m, options, device)
        except (ValueError, FileNotFoundError, NotImplementedError, WeightsError) as err:
            notes.append(f"{m}: skipped, build_detector failed: {err}")
    for m in [m for m in detectors if ":" in m]:
        base = parse_variant(m)[0]
        same_config = getattr(detectors[m], "model", None) is not None and base in detectors and detectors[m].model.config == detectors[base].model.config
        if same_config and getattr(detectors[m], "modules_file", None) == getattr(detectors[base], "modules_file", None):
            notes.append(f"{m}: the shipped {base} setting itself, see the {base} row")
            del detectors[m]
    return detectors


# --------------------------------------------------------------------------- running


class Runs:
    """Every method's detections on the degraded and the clean pass of every clip.

    ``raw``, ``model_s`` and ``shots`` are keyed ``(clip name, "degraded" | "clean",
    method)``: list[Detections] (one per held-out frame, labels index ``classes``),
    model seconds, and the hard cuts the method's detector found.
    """

    def __init__(self, classes, raw: dict | None = None, model_s: dict | None = None, shots: dict | None = None):
        self.classes = classes
        self.raw = {} if raw is None else raw
        self.model_s = {} if model_s is None else model_s
        self.shots = {} if shots is None else shots
        self._linked: dict = {}

    @classmethod
    def run(cls, detectors: dict, clips: list[HeldOutClip], classes) -> Runs:
        """Warm every detector up on the first clip's first chunk, then run them all: per clip,
        the degraded pass then the clean one; the method order alternates between passes."""
        import torch

        from vidtag.types import FrameChunk

        runs = cls(classes)
        for d in detectors.values():
            warm = clips[0].frames[:CHUNK_FRAMES]  # warm-up through the common video-detector interface
            list(d.run([FrameChunk(0, torch.from_numpy(warm), np.arange(len(warm), dtype=np.float64))]))
        pass_no = 0
        for c in clips:
            for variant in ("degraded", "clean"):
                order = list(detectors) if pass_no % 2 == 0 else list(detectors)[::-1]
                for m in order:
                    key = c.clip.name, variant, m
                    runs.raw[key], runs.model_s[key], runs.shots[key] = run_model(detectors[m], c, variant == "degraded")
                pass_no += 1
        return runs

    def linked(self, key: tuple, link: str) -> list:
        """The detections of run ``key`` linked with ``link`` (no track crosses a hard cut its
        detector found); the first call links, later ones reuse the result."""
        from vidtag.linking import link as link_frames

        if (key, link) not in self._linked:
            self._linked[key, link] = link_frames(self.raw[key], method=link, shot_starts=self.shots[key])
        return self._linked[key, link]

    def boxes(self, key: tuple, link: str):
        """:meth:`linked` as VideoBoxes of every frame of the clip."""
        dets = self.linked(key, link)
        return to_video_boxes(key[0], dets, self.classes, np.arange(len(dets)))


# --------------------------------------------------------------------------- pseudo ground truth


@dataclass
class PseudoGT:
    """The pseudo ground truth of each clip (VideoBoxes by clip name, class names, no scores):
    every held-out frame, its degraded frames, its clean frames; and how many clean
    per-frame results reached ``max_det`` (their pseudo GT may miss boxes)."""

    every_frame: dict
    degraded_frames: dict
    clean_frames: dict
    at_max_det: int = 0

    @classmethod
    def from_detections(cls, clean: dict, masks: dict, classes, max_det: int | None = None, sizes: dict | None = None) -> PseudoGT:
        """``clean``: clip name -> list[Detections] of the per-frame detector on the clean frames;
        ``masks``: clip name -> bool[T], True on the degraded frames; ``sizes``: clip name ->
        (width, height) of its frames.  Boxes with score >= :data:`PSEUDO_GT_SCORE` are kept."""
        every, degraded, clean_frames, at_max = {}, {}, {}, 0
        for n, dets in clean.items():
            if max_det is not None:
                at_max += sum(len(d) >= max_det for d in dets)
            w, h = (sizes or {}).get(n, (0, 0))
            mask = np.asarray(masks[n], bool)
            every[n] = to_video_boxes(n, dets, classes, np.arange(len(dets)), PSEUDO_GT_SCORE, w, h)
            degraded[n] = to_video_boxes(n, dets, classes, np.flatnonzero(mask), PSEUDO_GT_SCORE, w, h)
            clean_frames[n] = to_video_boxes(n, dets, classes, np.flatnonzero(~mask), PSEUDO_GT_SCORE, w, h)
        return cls(every, degraded, clean_frames, at_max)

    def class_counts(self, classes) -> tuple[list[str], dict[str, dict[str, int]]]:
        """(the classes with a box in some clip, in label order; clip name -> {class: boxes} over them)."""
        clip_counts = {n: box_counts({n: v}) for n, v in self.every_frame.items()}
        gt_classes = [cl for cl in classes if any(cl in cc for cc in clip_counts.values())]
        return gt_classes, {n: {cl: cc.get(cl, 0) for cl in gt_classes} for n, cc in clip_counts.items()}

    def scored(self, classes) -> dict[str, list[str]]:
        """The classes with at least :data:`MIN_CLASS_BOXES` boxes over every held-out frame, per
        clip and ``"pooled"``: the class set of the columns that score every frame."""
        scored = {n: scored_classes({n: v}, classes) for n, v in self.every_frame.items()}
        scored["pooled"] = scored_classes(self.every_frame, classes)
        return scored


def pick(videos: dict, names) -> dict:
    """The entries of ``videos`` named in ``names`` (``None``: all of them)."""
    return dict(videos) if names is None else {n: videos[n] for n in names}


# --------------------------------------------------------------------------- scoring


def only_class(videos: dict, name: str) -> dict:
    """The same VideoBoxes with the boxes of class ``name`` only (every frame kept)."""
    from vidtag.eval.groundtruth import VideoBoxes

    return {n: VideoBoxes(v.name, {i: f[f.classes == name] for i, f in v.frames.items()}, v.width, v.height) for n, v in videos.items()}


def score_column(gt: dict, pred: dict, classes, min_boxes: int = MIN_CLASS_BOXES) -> dict:
    """One accuracy column: the GT frames in ``gt`` (VideoBoxes by name) against ``pred``.

    The column's own class set is the classes with at least ``min_boxes`` boxes in the
    frames of ``gt`` (:func:`scored_classes`).  Returns {"ap50": the class mean
    (:func:`ap50`), "box_weighted": :func:`box_weighted` of :func:`ap50_by_class`,
    "boxes": GT boxes of the scored classes, "classes": the scored classes in label
    order}; the AP50s are None when no class has enough boxes.
    """
    keep = scored_classes(gt, classes, min_boxes)
    per_class = ap50_by_class(gt, pred, classes, keep) if keep else {}
    return {
        "ap50": ap50(gt, pred, classes, keep) if keep else None,
        "box_weighted": box_weighted(per_class),
        "boxes": int(sum(n for _, n in per_class.values())),
        "classes": list(per_class),
    }


COLUMNS = (  # result key, the PseudoGT frames it scores, the pass whose predictions it scores
    ("ap50_degraded_all", "every_frame", "degraded"),
    ("ap50_degraded_only", "degraded_frames", "degraded"),
    ("ap50_degraded_clip_clean_frames", "clean_frames", "degraded"),
    ("ap50_clean_clip", "every_frame", "clean"),
)
COLUMN_EXTRAS = ("box_weighted", "boxes", "classes")  # a column's extra keys: f"{key}_{extra}"


def score_scope(gt: PseudoGT, preds: dict, classes, names=None) -> tuple[dict, dict]:
    """The accuracy columns of :data:`COLUMNS` over clips ``names`` (None: every clip of ``gt``,
    pooled in one COCO evaluation), each over its own class set (:func:`score_column`).

    ``preds``: {"degraded": {clip: VideoBoxes}, "clean": {clip: VideoBoxes}}, every frame.
    Returns (the class means by column key plus ``ap50_clean_clip_every_class``, the mean over
    every class present; the extras by ``f"{key}_{extra}"`` for each of :data:`COLUMN_EXTRAS`).
    """
    means, extras = {}, {}
    for key, frames, variant in COLUMNS:
        column = score_column(pick(getattr(gt, frames), names), pick(preds[variant], names), classes)
        means[key] = column["ap50"]
        for extra in COLUMN_EXTRAS:
            extras[f"{key}_{extra}"] = column[extra]
    means["ap50_clean_clip_every_class"] = ap50(pick(gt.every_frame, names), pick(preds["clean"], names), classes)
    return means, extras


def score_settings(runs: Runs, gt: PseudoGT, settings) -> list[dict]:
    """Link and score every (method, link) of ``settings`` on every clip of ``gt``.

    Each result is {"method", "link", "per_clip": {clip: row}, "pooled": row}; a row holds
    :func:`score_scope`'s columns, frames/s over both passes (model seconds plus the seconds
    of the first linking of each run, timed here), ``frames`` and, after them, the column
    extras.  Per clip also ``model_s`` and ``link_s`` by pass; pooled also
    ``ap50_clean_clip_per_class`` (fidelity of each class with a pseudo-GT box, every class).
    """
    gt_classes, _ = gt.class_counts(runs.classes)
    results = []
    for method, link in settings:
        per_clip = {}
        preds = {"degraded": {}, "clean": {}}
        total_frames, total_s = 0, 0.0
        for n in gt.every_frame:
            secs = {}
            for variant in ("degraded", "clean"):
                t0 = time.perf_counter()
                runs.linked((n, variant, method), link)
                secs[variant] = (runs.model_s[n, variant, method], time.perf_counter() - t0)
                preds[variant][n] = runs.boxes((n, variant, method), link)
            length = len(runs.raw[n, "clean", method])
            seconds = sum(a + b for a, b in secs.values())
            total_frames += 2 * length
            total_s += seconds
            means, extras = score_scope(gt, preds, runs.classes, [n])
            per_clip[n] = {
                **means,
                "fps": 2 * length / seconds,
                "model_s": {v: s[0] for v, s in secs.items()},
                "link_s": {v: s[1] for v, s in secs.items()},
                "frames": length,
                **extras,
            }
        means, extras = score_scope(gt, preds, runs.classes)
        pooled = {
            **means,
            "fps": total_frames / total_s,
            "frames": total_frames // 2,
            # fidelity per class: where a temporal method parts from the per-frame detector
            "ap50_clean_clip_per_class": {cl: ap50(only_class(gt.every_frame, cl), only_class(preds["clean"], cl), runs.classes) for cl in gt_classes},
            **extras,
        }
        results.append({"method": method, "link": link, "per_clip": per_clip, "pooled": pooled})
    return results


def greedy_match(pred, gt, iou: float = 0.5) -> np.ndarray:
    """bool[N]: which boxes of ``pred`` (FrameBoxes with scores), taken by decreasing score, take a
    still untaken same-class box of ``gt`` (FrameBoxes) at IoU >= ``iou``, the one of highest IoU."""
    from vidtag.eval.vid import box_iou

    hit = np.zeros(len(pred), bool)
    if not len(pred) or not len(gt):
        return hit
    ious = box_iou(pred.boxes, gt.boxes)
    ious[pred.classes[:, None] != gt.classes[None, :]] = -1.0
    taken = np.zeros(len(gt), bool)
    for p in np.argsort(-pred.scores, kind="stable"):
        cand = np.where(taken, -1.0, ious[p])
        g = int(np.argmax(cand))
        if cand[g] >= iou:
            taken[g] = hit[p] = True
    return hit


def recall_ceiling(pred, gt, iou: float = 0.5) -> np.ndarray:
    """bool[M]: GT boxes (FrameBoxes) that some same-class box of ``pred`` overlaps at IoU >= ``iou`` (no score order)."""
    from vidtag.eval.vid import box_iou

    if not len(gt):
        return np.zeros(0, bool)
    if not len(pred):
        return np.zeros(len(gt), bool)
    ious = box_iou(pred.boxes, gt.boxes)
    ious[pred.classes[:, None] != gt.classes[None, :]] = -1.0
    return (ious >= iou).any(axis=0)


def score_profile(pred_videos: dict, gt_videos: dict) -> dict:
    """Greedy IoU-0.5 matching over the GT frames (:func:`greedy_match`): TP / FP counts and their
    mean scores, and the recall ceiling (:func:`recall_ceiling`: share of GT boxes reachable; None
    without GT boxes).  Both arguments are VideoBoxes by name; every GT frame must be in ``pred_videos``."""
    tps, fps, reachable, total = [], [], 0, 0
    for n, gt_video in gt_videos.items():
        for fid, gt in gt_video.frames.items():
            pred = pred_videos[n].frames[fid]
            hit = greedy_match(pred, gt)
            tps.extend(pred.scores[hit].tolist())
            fps.extend(pred.scores[~hit].tolist())
            reachable += int(recall_ceiling(pred, gt).sum())
            total += len(gt)
    tps, fps = np.asarray(tps), np.asarray(fps)
    return {
        "recall_ceiling": reachable / total if total else None,
        "tp": int(len(tps)),
        "fp": int(len(fps)),
        "mean_tp_score": float(tps.mean()) if len(tps) else None,
        "mean_fp_score": float(fps.mean()) if len(fps) else None,
    }


def seqnms_breakdown(raw, classes, frame_ids, name, shot_starts=()):
    """Split Seq-NMS+'s effect on AP into box removal and rescoring.

    ``raw``: list[Detections] of the per-frame detector, one per frame.  Returns a dict
    of variants -> predictions (VideoBoxes over ``frame_ids``): the per-frame boxes;
    the boxes Seq-NMS+ keeps with their own scores (removal only); every per-frame box
    with the path's score where it lies on a path (rescoring only); Seq-NMS+ itself;
    Seq-NMS (mean rescoring); plus path statistics (boxes at or above
    :data:`PSEUDO_GT_SCORE` removed or rescored below it, boxes below it rescored to
    it or above, paths, boxes on paths and their path lengths in ``frame_ids``).
    """
    from vidtag.linking import paths_to_detections, seq_nms_paths
    from vidtag.types import Detections

    paths = seq_nms_paths(raw, link_iou=0.5, suppress_iou=0.3, nms_iou=0.5, shot_starts=shot_starts)
    on_path = [np.zeros(len(d), bool) for d in raw]
    rescored = [d.scores.copy() for d in raw]
    length = [np.zeros(len(d), np.int64) for d in raw]
    for p in paths:
        value = p.rescored("seqnms+")
        for t, j in p.members:
            on_path[t][j] = True
            rescored[t][j] = value
            length[t][j] = len(p.members)
    keep_own = [d[m] for d, m in zip(raw, on_path)]
    rescore_only = [Detections(d.boxes, s, d.labels) for d, s in zip(raw, rescored)]
    variants = {
        "per-frame": raw,
        "Seq-NMS+ boxes, own scores (removal only)": keep_own,
        "all boxes, Seq-NMS+ scores on paths (rescoring only)": rescore_only,
        "Seq-NMS+ (removal + rescoring)": paths_to_detections(raw, paths, "seqnms+"),
        "Seq-NMS (mean rescoring), same paths": paths_to_detections(raw, paths, "seqnms"),
    }
    fids = set(int(i) for i in frame_ids)
    kept_lengths = np.concatenate([length[t][on_path[t]] for t in sorted(fids)]) if fids else np.zeros(0)
    own = np.concatenate([d.scores for d in raw]) if raw else np.zeros(0)
    new = np.concatenate(rescored) if raw else np.zeros(0)
    kept = np.concatenate(on_path) if raw else np.zeros(0, bool)
    high = own >= PSEUDO_GT_SCORE
    stats = {
        "boxes_at_or_above_gt_score": int(high.sum()),
        "of_them_removed": int((high & ~kept).sum()),
        "of_them_rescored_below": int((high & kept & (new < PSEUDO_GT_SCORE)).sum()),
        "boxes_below_gt_score": int((~high).sum()),
        "of_them_rescored_to_or_above": int((~high & kept & (new >= PSEUDO_GT_SCORE)).sum()),
        "paths": len(paths),
        "boxes_per_frame": int(sum(len(raw[t]) for t in fids)),
        "boxes_on_paths": int(sum(on_path[t].sum() for t in fids)),
        "share_of_kept_boxes_on_1_frame_paths": float(np.mean(kept_lengths == 1)) if len(kept_lengths) else None,
        "median_path_length_of_kept_boxes": float(np.median(kept_lengths)) if len(kept_lengths) else None,
    }
    return {k: to_video_boxes(name, v, classes, frame_ids) for k, v in variants.items()}, stats


# --------------------------------------------------------------------------- diagnostics


def scopes_of(names: list[str]) -> list[str]:
    """The scopes a diagnostic reports: each clip, then "pooled" when there are several."""
    return list(names) + (["pooled"] if len(names) > 1 else [])


def seqnms_diagnostics(runs: Runs, gt: PseudoGT) -> tuple[dict, list[str]]:
    """Seq-NMS+ against the per-frame detector on the degraded clips (:func:`seqnms_breakdown` of
    the ``frame`` runs): per scope and variant the degraded-clip columns (each over its own class
    set) and :func:`score_profile` on the degraded frames; path statistics per clip and pass.

    Returns ({"variants": {"scope/variant": entry}, "paths": {"clip/pass": stats}}, table lines).
    """
    names = list(gt.every_frame)
    lines = [
        "**Seq-NMS+ vs per-frame on the degraded clips: where the AP50 goes** (recall ceiling: share of "
        "pseudo-GT boxes that any same-class box overlaps at IoU >= 0.5; TP / FP: greedy matching by score at IoU 0.5)",
        "",
        "| clip | variant | AP50 all frames | AP50 degraded frames | recall ceiling, degraded frames | TP / FP, degraded frames | mean score TP / FP, degraded frames |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    variants, stats = {}, {}
    for n in names:
        for variant in ("degraded", "clean"):
            raw = runs.raw[n, variant, "frame"]
            v, s = seqnms_breakdown(raw, runs.classes, np.arange(len(raw)), n, runs.shots[n, variant, "frame"])
            stats[n, variant] = s
            if variant == "degraded":
                for k, video in v.items():
                    variants.setdefault(k, {})[n] = video
    diagnostics = {"variants": {}, "paths": {f"{n}/{v}": s for (n, v), s in stats.items()}}
    for scope in scopes_of(names):
        names_in = names if scope == "pooled" else [scope]
        for k, videos in variants.items():
            sub = pick(videos, names_in)
            entry = {
                "ap50_degraded_all": score_column(pick(gt.every_frame, names_in), sub, runs.classes)["ap50"],
                "ap50_degraded_only": score_column(pick(gt.degraded_frames, names_in), sub, runs.classes)["ap50"],
                **score_profile(sub, pick(gt.degraded_frames, names_in)),
            }
            diagnostics["variants"][f"{scope}/{k}"] = entry
            lines.append(
                f"| {scope} | {k} | {pct(entry['ap50_degraded_all'])} | {pct(entry['ap50_degraded_only'])} | "
                f"{pct(entry['recall_ceiling'])} | {entry['tp']} / {entry['fp']} | "
                f"{score(entry['mean_tp_score'])} / {score(entry['mean_fp_score'])} |"
            )
    lines += [
        "",
        f"Seq-NMS+ paths and the {PSEUDO_GT_SCORE} line that defines the pseudo GT (on the clean clip a box is "
        f"pseudo GT exactly when its own score is >= {PSEUDO_GT_SCORE}):",
        "",
        f"| clip | pass | paths | boxes kept / in | kept boxes on 1-frame paths | median path length (kept box) | boxes >= {PSEUDO_GT_SCORE}: removed / rescored below | boxes < {PSEUDO_GT_SCORE}: rescored to >= {PSEUDO_GT_SCORE} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, v), s in stats.items():
        if s["share_of_kept_boxes_on_1_frame_paths"] is None:
            continue
        lines.append(
            f"| {n} | {v} | {s['paths']} | {s['boxes_on_paths']} / {s['boxes_per_frame']} | "
            f"{100 * s['share_of_kept_boxes_on_1_frame_paths']:.0f}% | {s['median_path_length_of_kept_boxes']:.0f} | "
            f"{s['of_them_removed']} / {s['of_them_rescored_below']} of {s['boxes_at_or_above_gt_score']} | "
            f"{s['of_them_rescored_to_or_above']} of {s['boxes_below_gt_score']} |"
        )
    lines.append("")
    return diagnostics, lines


def lower_conf_diagnostic(runs: Runs, gt: PseudoGT, clips: list[HeldOutClip], conf: float, options, device) -> tuple[dict, list[str]]:
    """Not a setting: the per-frame detector at ``conf`` instead of ``options.conf`` on the degraded
    clips, without linking and with Seq-NMS+ (linking only rescores the boxes the detector kept).

    Returns ({"CONF/LINK": {boxes on the degraded frames, recall ceiling there, the two degraded-clip
    columns (pooled, each over its own class set)}}, table lines).
    """
    from dataclasses import replace

    from vidtag.linking import link as link_frames

    low_options = replace(options, conf=conf)
    low_detector = build_variant("frame", low_options, device)
    low, low_max, low_shots = {}, 0, {}
    for c in clips:
        low[c.clip.name], _, low_shots[c.clip.name] = run_model(low_detector, c, True)
        low_max += sum(len(d) >= low_options.max_det for d in low[c.clip.name])
    lines = [
        f"**Diagnostic, not a setting: the per-frame detector at conf {conf} instead of {options.conf} on the degraded clips (pooled)** "
        f"(frames at max_det: {low_max})",
        "",
        "| conf | linking | boxes on degraded frames | recall ceiling, degraded frames | AP50 all frames | AP50 degraded frames only |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    names = list(gt.every_frame)
    sources = (
        (options.conf, {n: runs.raw[n, "degraded", "frame"] for n in names}, {n: runs.shots[n, "degraded", "frame"] for n in names}),
        (conf, low, low_shots),
    )
    diag = {}
    for c_conf, source, shots in sources:
        for link in ("none", "seqnms+"):
            pred = {n: to_video_boxes(n, link_frames(source[n], method=link, shot_starts=shots[n]), runs.classes, np.arange(len(source[n]))) for n in names}
            prof = score_profile(pred, gt.degraded_frames)
            entry = {
                "boxes_degraded_frames": int(sum(len(pred[n].frames[f]) for n in gt.degraded_frames for f in gt.degraded_frames[n].frames)),
                "recall_ceiling": prof["recall_ceiling"],
                "ap50_degraded_all": score_column(gt.every_frame, pred, runs.classes)["ap50"],
                "ap50_degraded_only": score_column(gt.degraded_frames, pred, runs.classes)["ap50"],
            }
            diag[f"{c_conf}/{link}"] = entry
            lines.append(f"| {c_conf} | {link} | {entry['boxes_degraded_frames']} | {pct(entry['recall_ceiling'])} | "
                         f"{pct(entry['ap50_degraded_all'])} | {pct(entry['ap50_degraded_only'])} |")
    lines.append("")
    return diag, lines


def per_class_degraded(runs: Runs, gt: PseudoGT, settings) -> tuple[dict, list[str]]:
    """AP50 of each pseudo-GT class alone on the degraded clips (pooled), all frames and degraded
    frames only, per setting, with the class's boxes; the last table row weighs the classes by
    their boxes (:func:`box_weighted`).

    Returns ({class: {setting: {"all", "degraded_only"}, "boxes": {"all", "degraded_only"}}}, table lines).
    """
    gt_classes, _ = gt.class_counts(runs.classes)
    names = list(gt.every_frame)
    lines = [
        "**AP50 per class on the degraded clips (pooled)**: pseudo-GT boxes all / degraded frames; AP50 all frames / degraded frames only",
        "",
        "| class | pseudo-GT boxes | " + " | ".join(setting_name(m, l) for m, l in settings) + " |",
        "|---|---:|" + "---:|" * len(settings),
    ]
    per_class = {}
    for cl in gt_classes:
        g_all, g_deg = only_class(gt.every_frame, cl), only_class(gt.degraded_frames, cl)
        n_all = sum(len(f) for v in g_all.values() for f in v.frames.values())
        n_deg = sum(len(f) for v in g_deg.values() for f in v.frames.values())
        cells = []
        for method, link in settings:
            pred = {n: runs.boxes((n, "degraded", method), link) for n in names}
            a, d = ap50(g_all, pred, runs.classes), ap50(g_deg, pred, runs.classes)
            per_class.setdefault(cl, {})[setting_name(method, link)] = {"all": a, "degraded_only": d}
            cells.append(f"{pct(a)} / {pct(d)}")
        lines.append(f"| {cl} | {n_all} / {n_deg} | " + " | ".join(cells) + " |")
        per_class[cl]["boxes"] = {"all": n_all, "degraded_only": n_deg}
    cells = []
    for method, link in settings:
        name = setting_name(method, link)
        means = [box_weighted({cl: (v[name][part], v["boxes"][part]) for cl, v in per_class.items()}) for part in ("all", "degraded_only")]
        cells.append(f"{pct(means[0])} / {pct(means[1])}")
    lines += ["| mean weighted by pseudo-GT boxes (not a COCO figure) | | " + " | ".join(cells) + " |", ""]
    return per_class, lines


def per_kind_ap50(runs: Runs, clips: list[HeldOutClip], settings, among) -> tuple[dict, list[str]]:
    """AP50 on the degraded frames of each kind of :data:`vidtag.degrade.KINDS` (pooled; pseudo GT
    of those frames from the clean ``frame`` run; class mean over ``among``), per setting.

    Returns ({setting: {kind: AP50 or None}}, table lines).
    """
    from vidtag.degrade import KINDS

    kind_rows = {}
    for method, link in settings:
        row = {}
        for kind in KINDS:
            g, p = {}, {}
            for c in clips:
                ids = [i for i, s in enumerate(c.schedule) if s.kind == kind]
                if ids:
                    h, w = c.frames.shape[1:3]
                    g[c.clip.name] = to_video_boxes(c.clip.name, runs.raw[c.clip.name, "clean", "frame"], runs.classes, ids, PSEUDO_GT_SCORE, w, h)
                    p[c.clip.name] = runs.boxes((c.clip.name, "degraded", method), link)
            row[kind] = ap50(g, p, runs.classes, among) if g else None
        kind_rows[setting_name(method, link)] = row
    frames_per_kind = {k: sum(sum(s.kind == k for s in c.schedule) for c in clips) for k in KINDS}
    lines = [
        "**AP50 on the degraded frames of each kind (pooled)**",
        "",
        "| setting | " + " | ".join(f"{k} ({frames_per_kind[k]} frames)" for k in KINDS) + " |",
        "|---|" + "---:|" * len(KINDS),
    ]
    for name, row in kind_rows.items():
        lines.append(f"| {name} | " + " | ".join(pct(row[k]) for k in KINDS) + " |")
    lines.append("")
    return kind_rows, lines


# --------------------------------------------------------------------------- tables


MD_BEGIN = "<!-- robustness.py: begin (generated; edits here are overwritten) -->"
MD_END = "<!-- robustness.py: end -->"


def pct(v) -> str:
    """A fraction as points: 0.5333 -> "53.3"; None -> "-"."""
    return "-" if v is None else f"{100 * v:.1f}"


def score(v) -> str:
    """A detection score: 0.41234 -> "0.412"; None -> "-"."""
    return "-" if v is None else f"{v:.3f}"


def describe_split(clips: list[HeldOutClip], notes: list[str], options, threads: int, device: str) -> list[str]:
    """The split, seeds, degradations, detector options and notes, as the results' first lines."""
    lines = [
        "Held-out split and seeds:",
        "",
        "| clip | size | file frames | training frames (reserved) | held-out frames (scored) | degraded frames | bursts | seed |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for c in clips:
        h, w = c.frames.shape[1:3]
        lines.append(
            f"| {c.clip.file} | {w}x{h} | {c.file_frames} | 0-{c.start - 1} | {c.start}-{c.start + len(c) - 1} ({len(c)}) | "
            f"{int(c.mask.sum())} ({100 * c.mask.mean():.0f}%) | {len(c.schedule.bursts)} | {c.seed} |"
        )
    lines += [
        "",
        f"Degradations: vidtag.degrade.DegradationSchedule.sample(held-out frames, seed, fraction={DEGRADED_FRACTION}, "
        f"burst={BURST}), all kinds; seeds {RESERVED_SEEDS[0]}-{RESERVED_SEEDS[1]} are reserved for benchmarks "
        "(training must use others). Pseudo GT: per-frame NanoDet-g (imgsz 416, no linking) on the clean held-out "
        f"frames, score >= {PSEUDO_GT_SCORE}. Detectors at conf {options.conf}, imgsz {options.imgsz}, chunks of {CHUNK_FRAMES}; "
        f"frames/s = model + linking on in-memory frames (decode and degradation excluded), torch threads {threads}, "
        f"device {device}.",
    ]
    lines += [f"Note: {n}" for n in notes]
    lines.append("")
    return lines


def describe_pseudo_gt(counts: dict, at_max_det: int, max_det: int, scored: dict) -> list[str]:
    """The pseudo-GT boxes per clip and class, and the class rule with the classes it keeps over every frame."""
    return [
        f"Pseudo GT boxes (score >= {PSEUDO_GT_SCORE}, clean held-out frames): " + "; ".join(
            f"{n}: " + ", ".join(f"{cl} {k}" for cl, k in cs.items() if k) for n, cs in counts.items()
        ) + f". Frames at max_det ({max_det}): {at_max_det}. AP50 averages over the classes with at least "
        f"{MIN_CLASS_BOXES} pseudo-GT boxes in the frames a column scores, per scope; over every frame: "
        + "; ".join(f"{n}: {', '.join(cs)}" for n, cs in scored.items())
        + " (the column 'fidelity, every class' and the per-class tables keep every class).",
        "",
    ]


def accuracy_table(rows: list[dict], frame_fps: float | None) -> list[str]:
    """The class-mean columns, frames/s and the speed relative to ``frame_fps`` of one scope's rows
    (each a result row with ``method`` and ``link``)."""
    out = [
        "| method | linking | AP50 degraded clip: all frames | AP50 degraded frames only | AP50 clean frames of degraded clip | AP50 clean clip (fidelity) | fidelity, every class | frames/s | speed vs frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = f"{r['fps'] / frame_fps:.2f}x" if frame_fps else "-"
        out.append(
            f"| {r['method']} | {r['link']} | {pct(r['ap50_degraded_all'])} | {pct(r['ap50_degraded_only'])} | "
            f"{pct(r['ap50_degraded_clip_clean_frames'])} | {pct(r['ap50_clean_clip'])} | {pct(r.get('ap50_clean_clip_every_class'))} | "
            f"{r['fps']:.1f} | {rel} |"
        )
    return out


COLUMN_TITLES = {
    "ap50_degraded_all": "degraded clip: all frames",
    "ap50_degraded_only": "degraded frames only",
    "ap50_degraded_clip_clean_frames": "clean frames of degraded clip",
    "ap50_clean_clip": "clean clip (fidelity)",
}


def box_weighted_table(rows: list[dict]) -> list[str]:
    """The box-weighted AP50 of each column of :data:`COLUMNS` for one scope's rows; each header
    names the pseudo-GT boxes and classes its column scored (the same for every row: they
    depend on the pseudo GT only).  Rows without the column extras give no lines."""
    if not rows or any(f"{key}_box_weighted" not in r for r in rows for key, _, _ in COLUMNS):
        return []
    first = rows[0]
    out = [
        "Box-weighted AP50 (classes weighted by their pseudo-GT boxes; each column scores its own classes, those with at "
        f"least {MIN_CLASS_BOXES} boxes in its frames): "
        + "; ".join(f"{COLUMN_TITLES[key]}: {', '.join(first[f'{key}_classes']) or 'none'}" for key, _, _ in COLUMNS),
        "",
        "| method | linking | " + " | ".join(
            f"{COLUMN_TITLES[key]}, box-weighted (boxes {first[f'{key}_boxes']}, classes {len(first[f'{key}_classes'])})"
            for key, _, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for r in rows:
        out.append(f"| {r['method']} | {r['link']} | " + " | ".join(pct(r[f"{key}_box_weighted"]) for key, _, _ in COLUMNS) + " |")
    return out


def accuracy_tables(results: list[dict], clips: list[HeldOutClip]) -> list[str]:
    """Per clip, then pooled when there are several: :func:`accuracy_table` and
    :func:`box_weighted_table` under the scope's title."""

    def frame_fps(scope):
        for r in results:
            if (r["method"], r["link"]) == ("frame", "none"):
                return (r["pooled"] if scope is None else r["per_clip"][scope])["fps"]
        return None

    scopes = [(c.clip.name, f"{c.clip.file}, held-out frames {c.start}-{c.start + len(c) - 1}") for c in clips]
    if len(clips) > 1:
        scopes.append((None, "pooled (all clips in one COCO evaluation)"))
    lines = []
    for scope, title in scopes:
        rows = [dict(method=r["method"], link=r["link"], **(r["pooled"] if scope is None else r["per_clip"][scope])) for r in results]
        lines += [f"**{title}**", "", *accuracy_table(rows, frame_fps(scope)), ""]
        weighted = box_weighted_table(rows)
        if weighted:
            lines += [*weighted, ""]
    return lines


def fidelity_per_class_table(results: list[dict], gt_classes: list[str], counts: dict) -> list[str]:
    """Pooled fidelity of each class (``ap50_clean_clip_per_class``) per setting; ``counts``: clip ->
    {class: pseudo-GT boxes}, summed into the header."""
    pooled_counts = {cl: sum(cs.get(cl, 0) for cs in counts.values()) for cl in gt_classes}
    lines = [
        "**Fidelity per class (pooled AP50 on the clean clips; pseudo-GT boxes in brackets)**",
        "",
        "| method | linking | " + " | ".join(f"{cl} ({pooled_counts[cl]})" for cl in gt_classes) + " |",
        "|---|---|" + "---:|" * len(gt_classes),
    ]
    for r in results:
        per_class = r["pooled"]["ap50_clean_clip_per_class"]
        lines.append(f"| {r['method']} | {r['link']} | " + " | ".join(pct(per_class[cl]) for cl in gt_classes) + " |")
    lines.append("")
    return lines


def write_md(path: Path, lines: list[str]) -> None:
    """Write ``lines`` between :data:`MD_BEGIN` and :data:`MD_END`, keeping any text after the end marker."""
    tail = ""
    if path.exists():
        old = path.read_text()
        if MD_END in old:
            tail = old.split(MD_END, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([MD_BEGIN, *lines, MD_END]) + (tail if tail else "\n"))
