"""Whole ``vidtag detect`` processes: wall time and peak memory, as a user runs them.

    python benchmarks/bench_e2e.py [--clip PATH] [--repeats 3] [--frames 300] [--size 1280x720]
                                   [--peer-python PATH] [--also LABEL=COMMAND ...] [--out DIR]

Each setting is a fresh ``python -m vidtag.cli detect`` process (start-up,
model load, decode, detection, linking and writing included), timed from
outside; CPU seconds (user + system) and peak RSS are the child's own
(``getrusage`` in a wrapper process per run).  Settings run interleaved, ``--repeats`` times, and the table gives
medians and each setting's wall time relative to the first setting's
(``frame``, torch) in the same run.  Without ``--clip`` a synthetic H.264 clip
is made from a still in ``../shared/stills`` (``vidtag.synth``).

``--peer-python PATH`` adds what a user would otherwise run: ultralytics
``predict`` with YOLOv8n at the same input size, in torch and exported to
OpenVINO, from the Python of a separate environment (ultralytics needs
torchvision, which vidtag never installs; README, Speed and memory, says how
to make it).  YOLOv8n is built from its yaml (no weights can be downloaded
here), so its network costs what the trained one does while its NMS sees
the boxes of random weights; the export happens once, before the timed runs.

``--also LABEL=COMMAND`` times any other command the same way (``{clip}``
and ``{out}`` are replaced by the clip and a scratch folder).

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
    ("frame --vid-stride 1000 (the network on one frame: start-up, decoding and writing)", ["--vid-stride", "1000", *COCO_ONLY]),
    ("psla", ["--method", "psla", *COCO_ONLY]),
    ("iff, torch", ["--method", "iff", "--runtime", "torch", *COCO_ONLY]),
    ("iff (default runtime)", ["--method", "iff", *COCO_ONLY]),
]
WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode; "
           "wall = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(code, wall, u.ru_utime + u.ru_stime, u.ru_maxrss)")
PEER_IMGSZ = 416  # vidtag's input size, for the peer too
PEER_SCRIPT = """
import sys
from pathlib import Path

from ultralytics import YOLO

mode, model, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if mode == "prepare":  # YOLOv8n from its yaml, saved, and that checkpoint exported to OpenVINO
    net = YOLO("yolov8n.yaml")
    net.save(str(folder / "yolov8n.pt"))
    print(YOLO(str(folder / "yolov8n.pt")).export(format="openvino", imgsz=int(sys.argv[4])))
else:  # predict: every frame of the clip, nothing saved
    for _ in YOLO(model, task="detect").predict(source=sys.argv[4], imgsz=int(sys.argv[5]), stream=True, save=False, verbose=False):
        pass
"""


def timed(command: list[str]) -> tuple[float, float, float]:
    """Run ``command`` in a fresh wrapper: (wall seconds, CPU seconds, peak RSS in MB), of the command alone."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    code, wall, cpu, rss_kb = out.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"failed ({code}): {shlex.join(command)}\n{out.stderr[-2000:]}")
    return float(wall), float(cpu), int(rss_kb) / 1024


def peer_commands(python: str, folder: Path, clip: Path) -> list[tuple[str, list[str]]]:
    """Export YOLOv8n once with the peer environment's ``python``; the two timed predict commands."""
    import os

    script = folder / "peer.py"
    script.write_text(PEER_SCRIPT)
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    done = subprocess.run([python, str(script), "prepare", "-", str(folder), str(PEER_IMGSZ)], cwd=folder, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the peer environment could not build YOLOv8n: {done.stderr.strip().splitlines()[-1:]}")
    exported = folder / "yolov8n_openvino_model"
    predict = [python, str(script), "predict"]
    return [("ultralytics YOLOv8n, torch", [*predict, str(folder / "yolov8n.pt"), str(folder), str(clip), str(PEER_IMGSZ)]),
            ("ultralytics YOLOv8n, OpenVINO", [*predict, str(exported), str(folder), str(clip), str(PEER_IMGSZ)])]


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
    parser.add_argument("--peer-python", metavar="PATH", help="python of an environment with ultralytics and openvino (see the module doc)")
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
        if args.peer_python:
            commands += peer_commands(args.peer_python, Path(tmp), clip)
        for item in args.also:
            label, _, command = item.partition("=")
            commands.append((label, shlex.split(command.format(clip=clip, out=out))))
        runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in commands}
        for _ in range(args.repeats):
            for label, command in commands:
                runs[label].append(timed(command))
        from vidtag.io.decode import probe

        info = probe(clip)

    base = statistics.median(w for w, _, _ in runs[commands[0][0]])
    rows = [{"setting": label, "command": shlex.join(command[2:] if command[0] == sys.executable else command),
             "wall_s": round(statistics.median(w for w, _, _ in runs[label]), 2),
             "cpu_s": round(statistics.median(c for _, c, _ in runs[label]), 2),
             "peak_rss_mb": round(statistics.median(r for _, _, r in runs[label])),
             "wall_vs_first": round(statistics.median(w for w, _, _ in runs[label]) / base, 3)} for label, command in commands]
    command_line = "python benchmarks/bench_e2e.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"Command: `{command_line.strip()}` (commit {commit}, {time.strftime('%Y-%m-%d')})")
    print()
    print(f"Clip: {info.width}x{info.height}, {info.num_frames} frames; median of {args.repeats} interleaved runs; "
          f"{platform.machine()}, {platform.python_version()}.")
    print()
    print("| setting | wall (s) | frames/s | wall vs first row | CPU (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['wall_s']:.1f} | {info.num_frames / r['wall_s']:.1f} | {r['wall_vs_first']:.2f}x | "
              f"{r['cpu_s']:.1f} | {r['peak_rss_mb']} |")
    by_label = {r["setting"]: r for r in rows}
    peer, mine = by_label.get("ultralytics YOLOv8n, OpenVINO"), by_label.get("frame (default runtime)")
    if peer and mine:
        print(f"\n`frame` (default runtime) frames/s against ultralytics + OpenVINO's: {peer['wall_s'] / mine['wall_s']:.2f}x")
    record = {"command": command_line.strip(), "commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "clip": {"width": info.width, "height": info.height, "frames": info.num_frames, "given": args.clip},
              "repeats": args.repeats, "rows": rows}
    target = Path(args.out) / "benchmarks" / "results" / "e2e.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
