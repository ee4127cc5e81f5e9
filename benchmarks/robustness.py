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
in the frames the column scores, in the scope (a clip, or all clips pooled);
on the degraded clip over all frames, over the degraded frames only and over
its clean frames; on the clean clip ("fidelity": how close a method stays to
the per-frame detector where nothing is wrong; ``frame`` scores ~100 there by
construction).  Each column chooses its classes from its own frames: a class
with 20 boxes in the whole clip may have a handful in its degraded frames.
Beside each class mean, the results give the box-weighted AP50 (each class's
AP50 weighted by its pseudo-GT boxes) and the boxes and classes the column
scored (keys ``<column>_box_weighted``, ``_boxes``, ``_classes``).  Why 20:
with fewer boxes one box moves the class's AP by more than 5 points, and the
class weighs as much as person in the mean; the
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidtag.eval import robustness as rb  # noqa: E402  (the protocol and its scoring)
from vidtag.eval.robustness import ABLATION, IFF_CURVE, setting_name  # noqa: E402

DEFAULT_FOOTAGE = ROOT.parent / "shared" / "footage"


# --------------------------------------------------------------------------- plot


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


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(c.name for c in rb.CLIPS), help="comma-separated clip names (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=rb.BENCH_SEED, help="degradation seed of the first clip; clip k gets seed + k (default: %(default)s)")
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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.replot:
        record = json.loads((Path(args.out) / "benchmarks" / "results" / "robustness.json").read_text())
        plot_results(record["results"], Path(args.out), list(record["split"].values()))
        print(f"wrote {Path(args.out) / 'docs' / 'speed-accuracy.png'}")
        return

    import torch

    from vidtag.models.build import METHODS, DetectOptions
    from vidtag.weights import file_sha256

    torch.set_num_threads(args.threads)
    command = "python benchmarks/robustness.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines: list[str] = []

    def say(*texts: str) -> None:
        """Print ``texts`` (lines) and keep them for RESULTS-robustness.md."""
        for text in texts:
            print(text, flush=True)
            lines.append(text)

    say(f"Command: `{command.strip()}` (commit {commit}, {time.strftime('%Y-%m-%d')})", "")
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    by_name = {c.name: (k, c) for k, c in enumerate(rb.CLIPS)}
    names = [n.strip() for n in args.clips.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown clip(s) {unknown}: choose from {', '.join(by_name)}")
    if rb.RESERVED_SEEDS[0] <= args.seed and args.seed + len(rb.CLIPS) - 1 > rb.RESERVED_SEEDS[1]:
        raise SystemExit(f"--seed {args.seed} runs out of the reserved benchmark seeds {rb.RESERVED_SEEDS}")
    settings, notes = rb.parse_settings(args.methods, METHODS, args.ablation, args.iff_curve)
    methods = list(dict.fromkeys(["frame"] + [m for m, _ in settings]))  # frame always: it makes the pseudo GT

    options = DetectOptions()
    detectors = rb.build_detectors(methods, options, args.device, notes)
    settings = [s for s in settings if s[0] in detectors]
    classes = detectors["frame"].classes

    clips = [rb.HeldOutClip(by_name[n][1], by_name[n][0], Path(args.footage), args.seed, args.max_frames) for n in names]
    say(*rb.describe_split(clips, notes, options, args.threads, args.device))

    runs = rb.Runs.run(detectors, clips, classes)
    gt = rb.PseudoGT.from_detections({c.clip.name: runs.raw[c.clip.name, "clean", "frame"] for c in clips},
                                     {c.clip.name: c.mask for c in clips}, classes, options.max_det,
                                     {c.clip.name: c.frames.shape[2:0:-1] for c in clips})
    gt_classes, counts = gt.class_counts(classes)
    scored = gt.scored(classes)  # the classes of the columns that score every frame
    say(*rb.describe_pseudo_gt(counts, gt.at_max_det, options.max_det, scored))

    results = rb.score_settings(runs, gt, settings)
    say(*rb.accuracy_tables(results, clips))
    say(*rb.fidelity_per_class_table(results, gt_classes, counts))
    diagnostics = None
    if ("frame", "seqnms+") in settings:
        diagnostics, table = rb.seqnms_diagnostics(runs, gt)
        say(*table)
        if args.diag_conf:
            diagnostics["lower_conf"], table = rb.lower_conf_diagnostic(runs, gt, clips, args.diag_conf, options, args.device)
            say(*table)
    per_class, table = rb.per_class_degraded(runs, gt, settings)
    say(*table)
    kind_rows, table = rb.per_kind_ap50(runs, clips, settings, scored["pooled"])
    say(*table)

    elapsed = time.perf_counter() - t_start
    load_end = os.getloadavg()
    say(
        f"Run: {elapsed:.0f} s wall (decode, degrade, models, linking, scoring); load average "
        f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end on {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}."
    )

    out = Path(args.out)
    record = {
        "command": command.strip(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "modules_sha256": {m: file_sha256(d.modules_file) for m, d in detectors.items() if getattr(d, "modules_file", None) is not None},
        "iff_inference": {m: {k: getattr(d.model.config, k) for k in d.model.INFERENCE_FIELDS}  # what each iff row ran with
                          for m, d in detectors.items() if getattr(d, "method", None) == "iff"},
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
        "reserved_benchmark_seeds": list(rb.RESERVED_SEEDS),
        "schedules": {
            c.clip.name: [{"start": b.start, "stop": b.stop, "kind": b.kind} for b in c.schedule.bursts] for c in clips
        },
        "pseudo_gt": {"score_at_least": rb.PSEUDO_GT_SCORE, "boxes": counts, "frames_at_max_det": gt.at_max_det,
                      "min_class_boxes": rb.MIN_CLASS_BOXES, "scored_classes": scored},
        "options": {"conf": options.conf, "iou": options.iou, "imgsz": options.imgsz, "batch": rb.CHUNK_FRAMES, "threads": args.threads, "device": args.device},
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
    rb.write_md(out / "benchmarks" / "RESULTS-robustness.md", ["## Robustness: degraded held-out footage", "", *lines])
    plot_results(results, out, [{"file": c.clip.file} for c in clips])
    print(f"\nwrote {json_path}, {out / 'benchmarks' / 'RESULTS-robustness.md'}, {out / 'docs' / 'speed-accuracy.png'}")


if __name__ == "__main__":
    main()
