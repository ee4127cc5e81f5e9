"""Whole ``vidtag detect`` processes: wall time and peak memory, as a user runs them.

    python benchmarks/bench_e2e.py [--clip PATH] [--repeats 3] [--frames 300] [--size 1280x720]
                                   [--also LABEL=COMMAND ...] [--out DIR]

Each setting is a fresh ``python -m vidtag.cli detect`` process (start-up,
model load, decode, detection, linking and writing included), timed from
outside; peak RSS is the child's own (``getrusage`` in a wrapper process per
run).  Settings run interleaved, ``--repeats`` times, and the table gives
medians and each setting's wall time relative to the first setting's
(``frame``, torch) in the same run.  Without ``--clip`` a synthetic H.264 clip
is made from a still in ``../shared/stills`` (``vidtag.synth``).

``--also LABEL=COMMAND`` times any other command the same way, e.g. another
tool a user would pick instead (``{clip}`` and ``{out}`` are replaced by the
clip and a scratch folder): ultralytics, which needs torchvision, runs from
its own environment, e.g. ``--also 'yolov8n=/path/venv/bin/yolo predict
model=yolov8n.pt source={clip} save=False'``.

Writes ``benchmarks/results/e2e.json`` under ``--out`` (default: the repo).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STILL = ROOT.parent / "shared" / "stills" / "leuvenB.jpg"
ALL_FORMATS = ["--format", "coco", "--format", "mot", "--format", "mot-json", "--format", "csv", "--format", "mp4"]
COCO_ONLY = ["--link", "none", "--format", "coco"]
SETTINGS = [
    ("frame, torch", ["--runtime", "torch", *COCO_ONLY]),
    ("frame, onnxruntime", ["--runtime", "onnxruntime", *COCO_ONLY]),
    ("frame, openvino f32", ["--runtime", "openvino-f32", *COCO_ONLY]),
    ("frame (default runtime)", COCO_ONLY),
    ("frame, torch, all formats + Seq-NMS+", ["--runtime", "torch", *ALL_FORMATS]),
    ("frame (default runtime), all formats + Seq-NMS+", ALL_FORMATS),
    ("frame --vid-stride 2", ["--vid-stride", "2", *COCO_ONLY]),
    ("psla", ["--method", "psla", *COCO_ONLY]),
    ("iff, torch", ["--method", "iff", "--runtime", "torch", *COCO_ONLY]),
    ("iff (default runtime)", ["--method", "iff", *COCO_ONLY]),
]
WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode; "
           "wall = time.perf_counter() - t; "
           "print(code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh wrapper: (wall seconds, peak RSS in MB of the command alone)."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    code, wall, rss_kb = out.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"failed ({code}): {shlex.join(command)}")
    return float(wall), int(rss_kb) / 1024


def make_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    from vidtag.synth import load_image, synth_clip, write_clip

    write_clip(synth_clip(load_image(STILL), 3000, frames, size), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", help="video to run on (default: a synthetic clip)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="1280x720", help="WxH of the synthetic clip (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="+", help="labels of the settings to run (default: all)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=COMMAND")
    parser.add_argument("--out", default=str(ROOT))
    args = parser.parse_args()

    settings = [s for s in SETTINGS if not args.settings or s[0] in args.settings]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.clip) if args.clip else Path(tmp) / "clip.mp4"
        if not args.clip:
            w, h = (int(v) for v in args.size.split("x"))
            make_clip(clip, args.frames, (w, h))
        out = Path(tmp) / "out"
        commands = [(label, [sys.executable, "-m", "vidtag.cli", "detect", str(clip), "-o", str(out), "--overwrite", "-q", *extra])
                    for label, extra in settings]
        for item in args.also:
            label, _, command = item.partition("=")
            commands.append((label, shlex.split(command.format(clip=clip, out=out))))
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in commands}
        for _ in range(args.repeats):
            for label, command in commands:
                runs[label].append(timed(command))
        from vidtag.io.decode import probe

        info = probe(clip)

    base = statistics.median(w for w, _ in runs[commands[0][0]])
    rows = [{"setting": label, "command": shlex.join(command[2:] if command[0] == sys.executable else command),
             "wall_s": round(statistics.median(w for w, _ in runs[label]), 2),
             "peak_rss_mb": round(statistics.median(r for _, r in runs[label])),
             "wall_vs_first": round(statistics.median(w for w, _ in runs[label]) / base, 3)} for label, command in commands]
    command_line = "python benchmarks/bench_e2e.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"Command: `{command_line.strip()}` (commit {commit}, {time.strftime('%Y-%m-%d')})")
    print()
    print(f"Clip: {info.width}x{info.height}, {info.num_frames} frames; median of {args.repeats} interleaved runs; "
          f"{platform.machine()}, {platform.python_version()}.")
    print()
    print("| setting | wall (s) | frames/s | wall vs first row | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['wall_s']:.1f} | {info.num_frames / r['wall_s']:.1f} | {r['wall_vs_first']:.2f}x | {r['peak_rss_mb']} |")
    record = {"command": command_line.strip(), "commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "clip": {"width": info.width, "height": info.height, "frames": info.num_frames, "given": args.clip},
              "repeats": args.repeats, "rows": rows}
    target = Path(args.out) / "benchmarks" / "results" / "e2e.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
