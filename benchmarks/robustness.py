"""Robustness on degraded video: AP50 against a clean-clip pseudo ground truth, and frames/s.

    python benchmarks/robustness.py [--clips vtest,bikes] [--seed 1000] [--methods frame,frame+seqnms+]
                                    [--max-frames N] [--out .] [--threads 1] [--ablation] [--iff-curve]
    python benchmarks/robustness.py --replot   # redraw docs/speed-accuracy.png from the saved results

Split (issue 3).  Clips come from ../shared/footage (``--footage``), checked
against the sha256 in its SOURCE.md.  Each clip is split by time: the FIRST
``n // 2`` frames are reserved for training (temporal distillation), the LAST
``n - n // 2`` frames are held out and are all this benchmark looks at:

    vtest.avi  768x576, 795 frames: training 0-396, held out 397-794 (398 frames)
    bikes.mp4  640x272, 250 frames: training 0-124, held out 125-249 (125 frames)

tree.avi is excluded (no COCO objects).

Seeds.  The degradation schedule of clip k (k = index in CLIPS: vtest 0,
bikes 1) is ``DegradationSchedule.sample(held_out_frames, seed=1000 + k)``:
bursts of 3-8 frames on 40% of the frames, every kind of
:mod:`vidtag.degrade`.  Seeds 1000-1999 are reserved for benchmarks; training
must draw its degradations from other seeds.

Pseudo ground truth.  The per-frame detector (NanoDet-g, imgsz 416, no
linking) on the CLEAN held-out frames; boxes with score >= 0.4 are the ground
truth of the same frame in both the clean and the degraded clip.  It is taken
from the clean ``frame`` run below (conf 0.25, then score >= 0.4: the same
boxes as a run at 0.4 as long as no frame reaches max_det, which is checked).

Methods.  A setting is ``METHOD`` (no linking) or ``METHOD+LINK`` (LINK one of
vidtag.linking's methods).  By default every method in
``vidtag.models.build.METHODS`` runs without linking and with Seq-NMS+;
``psla`` and ``iff`` are asked for too and are skipped with a note while the
factory does not build them.  ``psla:KEY=VALUE`` runs the shipped PSLA modules
with an inference-time change (``d``: max displacement, ``k``: key interval,
``rfu=0`` / ``denseft=0``: that part switched off); ``--ablation`` adds the
paper's Table 5 rows that way (the modules are trained once, with d = 4 and
every part on).  Linking runs shot by shot, as in ``vidtag detect``: no track
crosses a hard cut the setting's detector found (``vidtag.shots``).  Detectors run at the CLI defaults (conf 0.25,
imgsz 416, chunks of 8 frames).

AP50.  COCO AP at IoU 0.5 (pycocotools through ``vidtag.eval.coco_ap``), the
mean over the classes with at least ``MIN_CLASS_BOXES`` (20) pseudo-GT boxes
in the scope (a clip, or all clips pooled) that are present in the frames
scored; on the degraded clip over all frames, over the degraded frames only
and over its clean frames; on the clean clip ("fidelity": how close a method
stays to the per-frame detector where nothing is wrong; ``frame`` scores ~100
there by construction).  Why 20: with fewer boxes one box moves the class's AP
by more than 5 points, and the class weighs as much as person in the mean; the
held-out clips have classes the teacher fires on once or a few times (traffic
light 1 box, fire hydrant 1, skis 7, dog 8): four of the eleven classes in
the mean before this rule.  "fidelity, every class" is
the old mean over every class present, and the per-class tables show each
class with its box count.

Speed.  Frames are decoded once into memory (clean held-out frames, plus the
degraded versions of degraded frames only) and handed to ``detector.run`` as
FrameChunk objects; the time spent building chunks is subtracted, so decode
and degradation never enter the speed figures.  frames/s = frames / (model
time + linking time), over both passes (clean and degraded) of every clip, on
``--threads`` CPU threads.  Other jobs may share the machine: the relative
speed (ratio to ``frame``, all measured in the same run) is the figure to
compare, not the absolute frames/s.

Outputs (under ``--out``, default the repo root): benchmarks/results/robustness.json
(raw figures, schedules, diagnostics; the command, commit and date of the run), benchmarks/RESULTS-robustness.md (the
printed tables, between markers; text after the end marker is kept) and
docs/speed-accuracy.png (needs matplotlib: ``pip install 'vidtag[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidtag.eval.robustness import (  # noqa: E402  (the protocol: clips, split, seeds, pseudo GT, AP50)
    BENCH_SEED,
    BURST,
    CHUNK_FRAMES,
    CLIPS,
    DEGRADED_FRACTION,
    MIN_CLASS_BOXES,
    PSEUDO_GT_SCORE,
    RESERVED_SEEDS,
    HeldOutClip,
    ap50,
    box_counts,
    run_model,
    scored_classes,
    to_video_boxes,
)

RUNTIME = "torch"  # every method on one engine, the reference (psla has no other); vidtag detect's default is in bench_runtime.py
CANDIDATE_METHODS = ("frame", "psla", "iff")  # the order of the table; vidtag.types.METHODS decides what runs
DEFAULT_LINKS = ("none", "seqnms+")
DEFAULT_FOOTAGE = ROOT.parent / "shared" / "footage"

MD_BEGIN = "<!-- robustness.py: begin (generated; edits here are overwritten) -->"
MD_END = "<!-- robustness.py: end -->"


# --------------------------------------------------------------------------- scoring


def only_class(videos: dict, name: str) -> dict:
    """The same VideoBoxes with the boxes of class ``name`` only (every frame kept)."""
    from vidtag.eval.groundtruth import VideoBoxes

    return {n: VideoBoxes(v.name, {i: f[f.classes == name] for i, f in v.frames.items()}, v.width, v.height) for n, v in videos.items()}


def greedy_match(pred, gt, iou: float = 0.5) -> np.ndarray:
    """bool[N]: which prediction boxes (FrameBoxes, by decreasing score) take a same-class GT box at IoU >= iou."""
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
    """bool[M]: GT boxes that some same-class prediction overlaps at IoU >= iou (no score order)."""
    from vidtag.eval.vid import box_iou

    if not len(gt):
        return np.zeros(0, bool)
    if not len(pred):
        return np.zeros(len(gt), bool)
    ious = box_iou(pred.boxes, gt.boxes)
    ious[pred.classes[:, None] != gt.classes[None, :]] = -1.0
    return (ious >= iou).any(axis=0)


# --------------------------------------------------------------------------- running


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
    """'psla:d=2:rfu=0' -> ('psla', {'max_displacement': 2, 'use_rfu': False}); 'frame' -> ('frame', {})."""
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
    :data:`ABLATION`, ``iff_curve`` :data:`IFF_CURVE` (without linking)."""
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
    return method if link == "none" else f"{method}+{link}"


def seqnms_breakdown(raw, classes, frame_ids, name, shot_starts=()):
    """Split Seq-NMS+'s effect on AP into box removal and rescoring.

    Returns a dict of variants -> predictions (VideoBoxes): the per-frame
    boxes; the boxes Seq-NMS+ keeps with their own scores (removal only);
    every per-frame box with the path's score where it lies on a path
    (rescoring only); Seq-NMS+ itself; Seq-NMS (mean rescoring); plus path
    statistics.
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


def score_profile(pred_videos: dict, gt_videos: dict) -> dict:
    """Greedy IoU-0.5 matching over the GT frames: TP / FP counts and scores, and the recall ceiling."""
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


# --------------------------------------------------------------------------- output


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(rows: list[dict], frame_fps: float | None) -> list[str]:
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


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Speed-accuracy figure: x frames/s, y AP50 on the degraded clip (pooled), one labelled point per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as err:
        raise ImportError("the speed-accuracy plot needs matplotlib: pip install 'vidtag[bench]'") from err
    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    placed = []  # (fps, label height in AP50 units) of the labels drawn so far

    def label_offset(x: float, y: float) -> int:
        """Vertical offset (points) for a label at (x, y) that keeps clear of labels already near x."""
        near = [h for px, h in placed if max(px, x) / min(px, x) < 1.25]
        for dy in (5, -11, 14, -20, 23, -29):
            h = y + dy / 3.0  # about 3 points per AP50 unit at this figure size
            if all(abs(h - other) > 3.5 for other in near):
                placed.append((x, h))
                return dy
        placed.append((x, y + 5 / 3.0))
        return 5

    for r in sorted(rows, key=lambda r: r["fps"]):
        x, y_all, y_deg = r["fps"], 100 * (r["ap50_degraded_all"] or 0), 100 * (r["ap50_degraded_only"] or 0)
        marker = "o" if r["link"] == "none" else "s"
        ax.scatter([x], [y_all], marker=marker, s=50, color="C0", zorder=3)
        ax.scatter([x], [y_deg], marker=marker, s=50, facecolors="none", edgecolors="C3", zorder=3)
        ax.plot([x, x], [y_deg, y_all], color="0.7", lw=1, zorder=2)
        label = setting_name(r["method"], r["link"]).replace("iff:module=", "iff:")
        # neighbours on the log axis sit close: move a label up or down until it clears its neighbours'
        ax.annotate(label, (x, y_all), textcoords="offset points", xytext=(5, label_offset(x, y_all)), fontsize=7)
    # IFF-Net's window curve (advanced module with TRL, no linking): window 4 -> 10 -> 20
    windows = {"iff": 20, **{f"iff:w={w}": w for w in (4, 10)}}
    curve = sorted((windows[r["method"]], r) for r in rows if r["method"] in windows and r["link"] == "none")
    if len(curve) > 1:
        ax.plot([r["fps"] for _, r in curve], [100 * (r["ap50_degraded_all"] or 0) for _, r in curve], color="C2", lw=1,
                zorder=1, label="iff, window 4 / 10 / 20")
    ax.scatter([], [], color="C0", label="all frames of the degraded clip")
    ax.scatter([], [], facecolors="none", edgecolors="C3", label="degraded frames only")
    ax.set_xlabel("frames/s, log scale (model + linking, CPU, in-memory frames)")
    ax.set_ylabel("AP50 vs clean-clip pseudo GT (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_ylim(0, 100)
    xs = [r["fps"] for r in rows]
    ax.set_xscale("log")  # the settings span 0.2x to 2x the per-frame speed
    if xs:
        ax.set_xlim(min(xs) / 1.3, max(xs) * 1.6)
    ax.set_xticks([t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100) if xs and min(xs) / 1.3 <= t <= max(xs) * 1.6])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_results(results: list[dict], out: Path, clips: list[dict]) -> None:
    """docs/speed-accuracy.png under ``out``: the methods and IFF-Net's curve (the PSLA ablation and the IFF
    training recipes stay in the tables)."""
    pooled_rows = [dict(method=r["method"], link=r["link"], **r["pooled"]) for r in results
                   if ":" not in r["method"] or (r["method"].startswith("iff:") and "modules=" not in r["method"])]
    plot(pooled_rows, out / "docs" / "speed-accuracy.png", "degraded held-out " + " + ".join(c["file"] for c in clips))


def write_md(path: Path, lines: list[str]) -> None:
    """Write ``lines`` between the markers, keeping any text after the end marker."""
    tail = ""
    if path.exists():
        old = path.read_text()
        if MD_END in old:
            tail = old.split(MD_END, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([MD_BEGIN, *lines, MD_END]) + (tail if tail else "\n"))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(c.name for c in CLIPS), help="comma-separated clip names (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=BENCH_SEED, help="degradation seed of the first clip; clip k gets seed + k (default: %(default)s)")
    parser.add_argument("--methods", default=None, help="settings METHOD or METHOD+LINK, comma-separated (default: every built method, without and with seqnms+)")
    parser.add_argument("--max-frames", type=int, default=None, help="held-out frames per clip, from its start (quick runs)")
    parser.add_argument("--out", default=str(ROOT), help="folder the results go under (default: the repo root)")
    parser.add_argument("--footage", default=str(DEFAULT_FOOTAGE), help="folder with vtest.avi and bikes.mp4")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s; the machine is shared)")
    parser.add_argument("--diag-conf", type=float, default=0.05, help="conf of one extra per-frame pass on the degraded clips that shows what a lower threshold leaves for linking; 0 skips it (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument("--ablation", action="store_true", help="add the PSLA ablation rows (paper Table 5 on our data): " + ", ".join(ABLATION))
    parser.add_argument("--replot", action="store_true", help="only redraw docs/speed-accuracy.png from benchmarks/results/robustness.json under --out")
    parser.add_argument("--iff-curve", action="store_true", help="add IFF-Net's speed-accuracy rows: " + ", ".join(IFF_CURVE))
    args = parser.parse_args()

    if args.replot:
        record = json.loads((Path(args.out) / "benchmarks" / "results" / "robustness.json").read_text())
        plot_results(record["results"], Path(args.out), list(record["split"].values()))
        print(f"wrote {Path(args.out) / 'docs' / 'speed-accuracy.png'}")
        return

    import torch

    from vidtag.linking import link as link_frames
    from vidtag.errors import WeightsError
    from vidtag.models.build import METHODS, DetectOptions, DetectorSettings, build_detector

    torch.set_num_threads(args.threads)
    command = "python benchmarks/robustness.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"Command: `{command.strip()}` (commit {commit}, {time.strftime('%Y-%m-%d')})")
    say()
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    by_name = {c.name: (k, c) for k, c in enumerate(CLIPS)}
    names = [n.strip() for n in args.clips.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown clip(s) {unknown}: choose from {', '.join(by_name)}")
    if RESERVED_SEEDS[0] <= args.seed and args.seed + len(CLIPS) - 1 > RESERVED_SEEDS[1]:
        raise SystemExit(f"--seed {args.seed} runs out of the reserved benchmark seeds {RESERVED_SEEDS}")
    settings, notes = parse_settings(args.methods, METHODS, args.ablation, args.iff_curve)
    methods = list(dict.fromkeys(["frame"] + [m for m, _ in settings]))  # frame always: it makes the pseudo GT

    options = DetectOptions()
    detectors = {}
    for m in methods:
        try:
            detectors[m] = build_variant(m, options, args.device)
        except (ValueError, FileNotFoundError, NotImplementedError, WeightsError) as err:
            notes.append(f"{m}: skipped, build_detector failed: {err}")
    # a variant that only restates the shipped config (e.g. psla:scale=stride) is psla itself: not run twice
    for m in [m for m in detectors if ":" in m]:
        base = parse_variant(m)[0]
        same_config = getattr(detectors[m], "model", None) is not None and base in detectors and detectors[m].model.config == detectors[base].model.config
        if same_config and getattr(detectors[m], "modules_file", None) == getattr(detectors[base], "modules_file", None):
            notes.append(f"{m}: the shipped {base} setting itself, see the {base} row")
            del detectors[m]
    settings = [s for s in settings if s[0] in detectors]
    classes = detectors["frame"].classes

    clips = [HeldOutClip(by_name[n][1], by_name[n][0], Path(args.footage), args.seed, args.max_frames) for n in names]
    say("Held-out split and seeds:")
    say()
    say("| clip | size | file frames | training frames (reserved) | held-out frames (scored) | degraded frames | bursts | seed |")
    say("|---|---|---:|---|---|---:|---:|---:|")
    for c in clips:
        h, w = c.frames.shape[1:3]
        say(
            f"| {c.clip.file} | {w}x{h} | {c.file_frames} | 0-{c.start - 1} | {c.start}-{c.start + len(c) - 1} ({len(c)}) | "
            f"{int(c.mask.sum())} ({100 * c.mask.mean():.0f}%) | {len(c.schedule.bursts)} | {c.seed} |"
        )
    say()
    say(
        f"Degradations: vidtag.degrade.DegradationSchedule.sample(held-out frames, seed, fraction={DEGRADED_FRACTION}, "
        f"burst={BURST}), all kinds; seeds {RESERVED_SEEDS[0]}-{RESERVED_SEEDS[1]} are reserved for benchmarks "
        "(training must use others). Pseudo GT: per-frame NanoDet-g (imgsz 416, no linking) on the clean held-out "
        f"frames, score >= {PSEUDO_GT_SCORE}. Detectors at conf {options.conf}, imgsz {options.imgsz}, chunks of {CHUNK_FRAMES}; "
        f"frames/s = model + linking on in-memory frames (decode and degradation excluded), torch threads {args.threads}, "
        f"device {args.device}."
    )
    for n in notes:
        say(f"Note: {n}")
    say()

    # Models: per clip, degraded then clean; the method order alternates between passes.
    for d in detectors.values():
        warm = clips[0].frames[:CHUNK_FRAMES]  # warm-up through the common video-detector interface
        from vidtag.types import FrameChunk

        list(d.run([FrameChunk(0, torch.from_numpy(warm), np.arange(len(warm), dtype=np.float64))]))
    raw, model_s, shots = {}, {}, {}  # per (clip, variant, method): detections, model seconds, shot starts
    linked_runs = {}  # (clip, variant, method), link -> linked detections: each run is linked once

    def link_run(key: tuple, link: str):
        """The detections of one run linked with ``link`` (no track crosses a hard cut its
        detector found); the first call links, later ones reuse the result.  The scoring
        loop below makes the first call of every run it times."""
        if (key, link) not in linked_runs:
            linked_runs[key, link] = link_frames(raw[key], method=link, shot_starts=shots[key])
        return linked_runs[key, link]
    pass_no = 0
    for c in clips:
        for variant in ("degraded", "clean"):
            order = list(detectors) if pass_no % 2 == 0 else list(detectors)[::-1]
            for m in order:
                key = c.clip.name, variant, m
                raw[key], model_s[key], shots[key] = run_model(detectors[m], c, variant == "degraded")
            pass_no += 1

    # Pseudo ground truth from the clean per-frame run.
    gt, gt_deg, gt_clean_frames = {}, {}, {}
    at_max_det = 0
    for c in clips:
        clean = raw[c.clip.name, "clean", "frame"]
        at_max_det += sum(len(d) >= options.max_det for d in clean)
        h, w = c.frames.shape[1:3]
        every = np.arange(len(c))
        gt[c.clip.name] = to_video_boxes(c.clip.name, clean, classes, every, PSEUDO_GT_SCORE, w, h)
        gt_deg[c.clip.name] = to_video_boxes(c.clip.name, clean, classes, np.flatnonzero(c.mask), PSEUDO_GT_SCORE, w, h)
        gt_clean_frames[c.clip.name] = to_video_boxes(c.clip.name, clean, classes, np.flatnonzero(~c.mask), PSEUDO_GT_SCORE, w, h)
    clip_counts = {n: box_counts({n: v}) for n, v in gt.items()}
    gt_classes = [cl for cl in classes if any(cl in cc for cc in clip_counts.values())]  # label order
    counts = {n: {cl: cc.get(cl, 0) for cl in gt_classes} for n, cc in clip_counts.items()}
    scored = {n: scored_classes({n: gt[n]}, classes) for n in gt}  # the classes each scope's AP50 averages over
    scored["pooled"] = scored_classes(gt, classes)
    say(f"Pseudo GT boxes (score >= {PSEUDO_GT_SCORE}, clean held-out frames): " + "; ".join(
        f"{n}: " + ", ".join(f"{cl} {k}" for cl, k in cs.items() if k) for n, cs in counts.items()
    ) + f". Frames at max_det ({options.max_det}): {at_max_det}. AP50 averages over the classes with at least "
        f"{MIN_CLASS_BOXES} pseudo-GT boxes in the scope: " + "; ".join(f"{n}: {', '.join(cs)}" for n, cs in scored.items())
        + " (the column 'fidelity, every class' and the per-class tables keep every class).")
    say()

    # Linking and scoring.
    results = []
    for method, link in settings:
        per_clip = {}
        preds = {"degraded": {}, "clean": {}}
        total_frames, total_s = 0, 0.0
        for c in clips:
            n = c.clip.name
            secs = {}
            for variant in ("degraded", "clean"):
                t0 = time.perf_counter()
                linked = link_run((n, variant, method), link)
                secs[variant] = (model_s[n, variant, method], time.perf_counter() - t0)
                preds[variant][n] = to_video_boxes(n, linked, classes, np.arange(len(c)))
            frames = 2 * len(c)
            seconds = sum(a + b for a, b in secs.values())
            total_frames += frames
            total_s += seconds
            per_clip[n] = {
                "ap50_degraded_all": ap50({n: gt[n]}, {n: preds["degraded"][n]}, classes, scored[n]),
                "ap50_degraded_only": ap50({n: gt_deg[n]}, {n: preds["degraded"][n]}, classes, scored[n]),
                "ap50_degraded_clip_clean_frames": ap50({n: gt_clean_frames[n]}, {n: preds["degraded"][n]}, classes, scored[n]),
                "ap50_clean_clip": ap50({n: gt[n]}, {n: preds["clean"][n]}, classes, scored[n]),
                "ap50_clean_clip_every_class": ap50({n: gt[n]}, {n: preds["clean"][n]}, classes),
                "fps": frames / seconds,
                "model_s": {v: s[0] for v, s in secs.items()},
                "link_s": {v: s[1] for v, s in secs.items()},
                "frames": len(c),
            }
        pooled = {
            "ap50_degraded_all": ap50(gt, preds["degraded"], classes, scored["pooled"]),
            "ap50_degraded_only": ap50(gt_deg, preds["degraded"], classes, scored["pooled"]),
            "ap50_degraded_clip_clean_frames": ap50(gt_clean_frames, preds["degraded"], classes, scored["pooled"]),
            "ap50_clean_clip": ap50(gt, preds["clean"], classes, scored["pooled"]),
            "ap50_clean_clip_every_class": ap50(gt, preds["clean"], classes),
            "fps": total_frames / total_s,
            "frames": sum(len(c) for c in clips),
            # fidelity per class: where a temporal method parts from the per-frame detector
            "ap50_clean_clip_per_class": {cl: ap50(only_class(gt, cl), only_class(preds["clean"], cl), classes) for cl in gt_classes},
        }
        results.append({"method": method, "link": link, "per_clip": per_clip, "pooled": pooled})

    def frame_fps(scope):
        for r in results:
            if (r["method"], r["link"]) == ("frame", "none"):
                return (r["pooled"] if scope is None else r["per_clip"][scope])["fps"]
        return None

    scopes = [(c.clip.name, f"{c.clip.file}, held-out frames {c.start}-{c.start + len(c) - 1}") for c in clips]
    if len(clips) > 1:
        scopes.append((None, "pooled (all clips in one COCO evaluation)"))
    for scope, title in scopes:
        say(f"**{title}**")
        say()
        rows = [dict(method=r["method"], link=r["link"], **(r["pooled"] if scope is None else r["per_clip"][scope])) for r in results]
        for line in table(rows, frame_fps(scope)):
            say(line)
        say()

    # Fidelity per class (pooled): a class with a handful of pseudo-GT boxes weighs as much as person in AP50.
    pooled_counts = {cl: sum(cs.get(cl, 0) for cs in counts.values()) for cl in gt_classes}
    say("**Fidelity per class (pooled AP50 on the clean clips; pseudo-GT boxes in brackets)**")
    say()
    say("| method | linking | " + " | ".join(f"{cl} ({pooled_counts[cl]})" for cl in gt_classes) + " |")
    say("|---|---|" + "---:|" * len(gt_classes))
    for r in results:
        per_class = r["pooled"]["ap50_clean_clip_per_class"]
        say(f"| {r['method']} | {r['link']} | " + " | ".join(pct(per_class[cl]) for cl in gt_classes) + " |")
    say()

    # Why Seq-NMS+ helps or hurts: decompose its effect on the degraded clips, per clip and pooled.
    diagnostics = None
    if ("frame", "seqnms+") in settings:
        say("**Seq-NMS+ vs per-frame on the degraded clips: where the AP50 goes** (recall ceiling: share of "
            "pseudo-GT boxes that any same-class box overlaps at IoU >= 0.5; TP / FP: greedy matching by score at IoU 0.5)")
        say()
        say("| clip | variant | AP50 all frames | AP50 degraded frames | recall ceiling, degraded frames | TP / FP, degraded frames | mean score TP / FP, degraded frames |")
        say("|---|---|---:|---:|---:|---:|---:|")
        variants, stats = {}, {}
        for c in clips:
            for variant in ("degraded", "clean"):
                v, s = seqnms_breakdown(raw[c.clip.name, variant, "frame"], classes, np.arange(len(c)), c.clip.name, shots[c.clip.name, variant, "frame"])
                stats[c.clip.name, variant] = s
                if variant == "degraded":
                    for k, video in v.items():
                        variants.setdefault(k, {})[c.clip.name] = video
        diagnostics = {"variants": {}, "paths": {f"{n}/{v}": s for (n, v), s in stats.items()}}
        for scope in [c.clip.name for c in clips] + (["pooled"] if len(clips) > 1 else []):
            names_in = [c.clip.name for c in clips] if scope == "pooled" else [scope]
            for k, videos in variants.items():
                sub = {n: videos[n] for n in names_in}
                entry = {
                    "ap50_degraded_all": ap50({n: gt[n] for n in names_in}, sub, classes, scored[scope]),
                    "ap50_degraded_only": ap50({n: gt_deg[n] for n in names_in}, sub, classes, scored[scope]),
                    **score_profile(sub, {n: gt_deg[n] for n in names_in}),
                }
                diagnostics["variants"][f"{scope}/{k}"] = entry
                say(
                    f"| {scope} | {k} | {pct(entry['ap50_degraded_all'])} | {pct(entry['ap50_degraded_only'])} | "
                    f"{pct(entry['recall_ceiling'])} | {entry['tp']} / {entry['fp']} | "
                    f"{entry['mean_tp_score']:.3f} / {entry['mean_fp_score']:.3f} |"
                )
        say()
        say(f"Seq-NMS+ paths and the {PSEUDO_GT_SCORE} line that defines the pseudo GT (on the clean clip a box is "
            f"pseudo GT exactly when its own score is >= {PSEUDO_GT_SCORE}):")
        say()
        say(f"| clip | pass | paths | boxes kept / in | kept boxes on 1-frame paths | median path length (kept box) | boxes >= {PSEUDO_GT_SCORE}: removed / rescored below | boxes < {PSEUDO_GT_SCORE}: rescored to >= {PSEUDO_GT_SCORE} |")
        say("|---|---|---:|---:|---:|---:|---:|---:|")
        for (n, v), s in stats.items():
            if s["share_of_kept_boxes_on_1_frame_paths"] is None:
                continue
            say(
                f"| {n} | {v} | {s['paths']} | {s['boxes_on_paths']} / {s['boxes_per_frame']} | "
                f"{100 * s['share_of_kept_boxes_on_1_frame_paths']:.0f}% | {s['median_path_length_of_kept_boxes']:.0f} | "
                f"{s['of_them_removed']} / {s['of_them_rescored_below']} of {s['boxes_at_or_above_gt_score']} | "
                f"{s['of_them_rescored_to_or_above']} of {s['boxes_below_gt_score']} |"
            )
        say()

    # Diagnostic: linking only rescores the boxes the detector kept; how many more would a lower conf keep?
    if args.diag_conf and ("frame", "seqnms+") in settings:
        low_options = DetectOptions(conf=args.diag_conf)
        low_detector, _ = build_detector(DetectorSettings("frame", None, low_options, args.device, runtime=RUNTIME))
        low, low_s, low_max, low_shots = {}, 0.0, 0, {}
        for c in clips:
            low[c.clip.name], secs, low_shots[c.clip.name] = run_model(low_detector, c, True)
            low_s += secs
            low_max += sum(len(d) >= low_options.max_det for d in low[c.clip.name])
        say(f"**Diagnostic, not a setting: the per-frame detector at conf {args.diag_conf} instead of {options.conf} on the degraded clips (pooled)** "
            f"(frames at max_det: {low_max})")
        say()
        say("| conf | linking | boxes on degraded frames | recall ceiling, degraded frames | AP50 all frames | AP50 degraded frames only |")
        say("|---:|---|---:|---:|---:|---:|")
        diag_low = {}
        source_shots = {options.conf: {n: shots[n, "degraded", "frame"] for n in gt}, args.diag_conf: low_shots}
        for conf, source in ((options.conf, {n: raw[n, "degraded", "frame"] for n in gt}), (args.diag_conf, low)):
            for link in ("none", "seqnms+"):
                pred = {c.clip.name: to_video_boxes(c.clip.name, link_frames(source[c.clip.name], method=link, shot_starts=source_shots[conf][c.clip.name]), classes, np.arange(len(c))) for c in clips}
                prof = score_profile(pred, gt_deg)
                entry = {
                    "boxes_degraded_frames": int(sum(len(pred[n].frames[f]) for n in gt_deg for f in gt_deg[n].frames)),
                    "recall_ceiling": prof["recall_ceiling"],
                    "ap50_degraded_all": ap50(gt, pred, classes, scored["pooled"]),
                    "ap50_degraded_only": ap50(gt_deg, pred, classes, scored["pooled"]),
                }
                diag_low[f"{conf}/{link}"] = entry
                say(f"| {conf} | {link} | {entry['boxes_degraded_frames']} | {pct(entry['recall_ceiling'])} | "
                    f"{pct(entry['ap50_degraded_all'])} | {pct(entry['ap50_degraded_only'])} |")
        say()
        if diagnostics is not None:
            diagnostics["lower_conf"] = diag_low

    # Per class: AP50 is a mean over classes, and some classes have a handful of pseudo-GT boxes.
    per_class = {}
    say("**AP50 per class on the degraded clips (pooled)**: pseudo-GT boxes all / degraded frames; AP50 all frames / degraded frames only")
    say()
    say("| class | pseudo-GT boxes | " + " | ".join(setting_name(m, l) for m, l in settings) + " |")
    say("|---|---:|" + "---:|" * len(settings))
    for cl in gt_classes:
        g_all, g_deg = only_class(gt, cl), only_class(gt_deg, cl)
        n_all = sum(len(f) for v in g_all.values() for f in v.frames.values())
        n_deg = sum(len(f) for v in g_deg.values() for f in v.frames.values())
        cells = []
        for method, link in settings:
            pred = {c.clip.name: to_video_boxes(c.clip.name, link_run((c.clip.name, "degraded", method), link), classes, np.arange(len(c))) for c in clips}
            a, d = ap50(g_all, pred, classes), ap50(g_deg, pred, classes)
            per_class.setdefault(cl, {})[setting_name(method, link)] = {"all": a, "degraded_only": d}
            cells.append(f"{pct(a)} / {pct(d)}")
        say(f"| {cl} | {n_all} / {n_deg} | " + " | ".join(cells) + " |")
        per_class[cl]["boxes"] = {"all": n_all, "degraded_only": n_deg}
    cells = []
    for method, link in settings:
        name = setting_name(method, link)
        means = []
        for part in ("all", "degraded_only"):
            pairs = [(v[name][part], v["boxes"][part]) for v in per_class.values() if v[name][part] is not None]
            means.append(sum(a * n for a, n in pairs) / sum(n for _, n in pairs) if pairs else None)
        cells.append(f"{pct(means[0])} / {pct(means[1])}")
    say("| mean weighted by pseudo-GT boxes (not a COCO figure) | | " + " | ".join(cells) + " |")
    say()

    # Degradation kinds: AP50 on the frames of each kind (pooled), per setting.
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
                    g[c.clip.name] = to_video_boxes(c.clip.name, raw[c.clip.name, "clean", "frame"], classes, ids, PSEUDO_GT_SCORE, w, h)
                    p[c.clip.name] = to_video_boxes(c.clip.name, link_run((c.clip.name, "degraded", method), link), classes, np.arange(len(c)))
            row[kind] = ap50(g, p, classes, scored["pooled"]) if g else None
        kind_rows[setting_name(method, link)] = row
    frames_per_kind = {k: sum(sum(s.kind == k for s in c.schedule) for c in clips) for k in KINDS}
    say("**AP50 on the degraded frames of each kind (pooled)**")
    say()
    say("| setting | " + " | ".join(f"{k} ({frames_per_kind[k]} frames)" for k in KINDS) + " |")
    say("|---|" + "---:|" * len(KINDS))
    for name, row in kind_rows.items():
        say(f"| {name} | " + " | ".join(pct(row[k]) for k in KINDS) + " |")
    say()

    elapsed = time.perf_counter() - t_start
    load_end = os.getloadavg()
    say(
        f"Run: {elapsed:.0f} s wall (decode, degrade, models, linking, scoring); load average "
        f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end on {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}."
    )

    out = Path(args.out)
    from vidtag.weights import file_sha256

    modules_sha256 = {}  # the temporal modules each setting ran with
    for m, d in detectors.items():
        source = getattr(d, "modules_file", None)
        if source is not None:
            modules_sha256[m] = file_sha256(source)
    record = {
        "command": command.strip(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "modules_sha256": modules_sha256,
        "split": {
            c.clip.name: {
                "file": c.clip.file,
                "sha256": c.clip.sha256,
                "file_frames": c.file_frames,
                "training_frames": [0, c.start - 1],
                "held_out_frames": [c.start, c.start + len(c) - 1],
            }
            for c in clips
        },
        "seeds": {c.clip.name: c.seed for c in clips},
        "reserved_benchmark_seeds": list(RESERVED_SEEDS),
        "schedules": {
            c.clip.name: [{"start": b.start, "stop": b.stop, "kind": b.kind} for b in c.schedule.bursts] for c in clips
        },
        "pseudo_gt": {"score_at_least": PSEUDO_GT_SCORE, "boxes": counts, "frames_at_max_det": at_max_det,
                      "min_class_boxes": MIN_CLASS_BOXES, "scored_classes": scored},
        "options": {"conf": options.conf, "iou": options.iou, "imgsz": options.imgsz, "batch": CHUNK_FRAMES, "threads": args.threads, "device": args.device},
        "notes": notes,
        "results": results,
        "per_kind_ap50": kind_rows,
        "per_class_ap50": per_class,
        "seqnms_diagnostics": diagnostics,
        "seconds": elapsed,
        "load_average": {"start": load_start[0], "end": load_end[0]},
    }
    json_path = out / "benchmarks" / "results" / "robustness.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    write_md(out / "benchmarks" / "RESULTS-robustness.md", ["## Robustness: degraded held-out footage", "", *lines])
    plot_results(results, out, [{"file": c.clip.file} for c in clips])
    print(f"\nwrote {json_path}, {out / 'benchmarks' / 'RESULTS-robustness.md'}, {out / 'docs' / 'speed-accuracy.png'}")


if __name__ == "__main__":
    main()
