"""Videos/hour of a folder: sequential, local worker processes, Ray.

Generates a folder of N small clips and runs the real `vidtag detect` on it
(NanoDet-g, `--method frame`, every format) three ways, each into its own
output folder, each as one command timed from start to end as a user would
see it (Python start, model loading and, for Ray, starting the cluster
included):

* sequential: `vidtag detect DIR` (torch's default threads: one per core),
  and again with ``OMP_NUM_THREADS=1`` (one torch thread, as each worker
  below has: on a machine shared with other jobs, torch's threads waiting
  for each other can cost more than they bring);
* local parallel: `vidtag detect DIR --workers C` (C = the machine's cores);
* Ray: `vidtag detect DIR --ray local` (a new single-machine cluster; one
  task per video, 1 CPU each, so at most C at once).

It checks that the runs wrote the same bytes, and prints a markdown
table: wall seconds, videos/hour, speed relative to sequential, and Ray's
overhead per video against each local mode ((Ray wall - mode wall) / N).
A second table splits Ray's wall time: starting a cluster alone (measured
separately), and the time per video inside the tasks (the manifest's
detect+write seconds) against the same figure of the local parallel run.

    python benchmarks/bench_batch.py [--videos 8] [--frames 60] [--size 160x120] [--imgsz 128]
                                     [--workers C] [--repeats 1] [--no-ray] [--out DIR]

Writes ``benchmarks/results/batch.json`` under ``--out`` (default: the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_timed(args: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command (with ``env`` added to the environment) to the end; its wall seconds."""
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **(env or {})))
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (rc {result.returncode}):\n{result.stderr[-3000:]}")
    return wall


def ray_start_seconds() -> float:
    """Wall time of starting (and stopping) a local Ray cluster alone, in a fresh process."""
    code = ("import time, logging; t = time.perf_counter(); import ray\n"
            "ray.init(address='local', log_to_driver=False, logging_level=logging.WARNING)\n"
            "print(time.perf_counter() - t); ray.shutdown()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"cannot start Ray: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def task_seconds(out: Path) -> float:
    """Mean per-video detect+write seconds recorded in a run's manifest."""
    videos = json.loads((out / "vidtag-run.json").read_text())["videos"]
    return sum(v["seconds"] for v in videos) / len(videos)


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.name != "vidtag-run.json")
    return names == sorted(p.name for p in b.iterdir() if p.name != "vidtag-run.json") and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of the generated clips")
    parser.add_argument("--imgsz", type=int, default=128, help="network input size: small keeps the run short")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local parallel workers [default: cores]")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, interleaved; the table gives medians")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray mode")
    parser.add_argument("--out", default=str(ROOT), help="folder the results go under (default: the repo)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from vidtag.testclip import make_clip

    n = args.videos
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for i in range(n):
            make_clip(folder / f"clip{i:02d}.mp4", n_frames=args.frames, width=width, height=height, fps=15)
        base = [sys.executable, "-m", "vidtag.cli", "detect", str(folder), "--imgsz", str(args.imgsz), "--quiet"]
        modes = {
            "sequential": ([], {}),
            "sequential, 1 torch thread": ([], {"OMP_NUM_THREADS": "1"}),
            f"local parallel (--workers {args.workers})": (["--workers", str(args.workers)], {}),
            **({} if args.no_ray else {"Ray (--ray local)": (["--ray", "local"], {})}),
        }
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        outs = {mode: Path(tmp) / f"out-{i}" for i, mode in enumerate(modes)}
        for _ in range(args.repeats):
            for mode, (extra, env) in modes.items():
                runs[mode].append(run_timed([*base, "-o", str(outs[mode]), "--overwrite", *extra], env))
                print(f"{mode}: {runs[mode][-1]:.1f} s", file=sys.stderr)
        walls = {mode: statistics.median(r) for mode, r in runs.items()}
        start_s = None if args.no_ray else ray_start_seconds()

        seq, _, par, *rest = walls
        ray = rest[0] if rest else None
        identical = all(same_bytes(outs[seq], outs[m]) for m in walls)
        command = "python benchmarks/bench_batch.py " + " ".join(sys.argv[1:])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        record = {"command": command.strip(), "commit": commit, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                  "videos": n, "frames": args.frames, "size": args.size, "imgsz": args.imgsz, "repeats": args.repeats,
                  "identical_outputs": identical,
                  "rows": [{"mode": mode, "wall_s": round(wall, 2), "runs_s": [round(r, 2) for r in runs[mode]],
                            "task_s": round(task_seconds(outs[mode]), 3), "vs_sequential": round(walls[seq] / wall, 3)}
                           for mode, wall in walls.items()],
                  "ray_start_s": None if start_s is None else round(start_s, 2)}
        target = Path(args.out) / "benchmarks" / "results" / "batch.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1) + "\n")
        print(f"command: {record['command']} (commit {commit}, {record['date']})")
        print(f"wall seconds: median of {args.repeats} interleaved run(s) per mode")
        print(f"{n} generated clips of {args.frames} frames {width}x{height}; NanoDet-g --method frame --imgsz "
              f"{args.imgsz}, all five formats; {os.cpu_count()} cores; outputs of all runs byte-identical: "
              f"{'yes' if identical else 'NO'}")
        print()
        print("| mode | videos | wall s | videos/hour | vs sequential | Ray overhead per video |")
        print("|---|---:|---:|---:|---:|---|")
        for mode, wall in walls.items():
            overhead = ""
            if mode == ray:
                overhead = ", ".join(f"{(wall - other) / n:+.2f} s vs {name}" for name, other in walls.items()
                                     if name != ray)
            print(f"| {mode} | {n} | {wall:.1f} | {n / wall * 3600:.0f} | {walls[seq] / wall:.2f}x | {overhead} |")
        if ray is None:
            return
        print()
        print("| Ray's share | seconds |")
        print("|---|---:|")
        print(f"| starting a local cluster alone (separate process) | {start_s:.1f} |")
        print(f"| per video inside the task (detect + write), Ray | {task_seconds(outs[ray]):.2f} |")
        print(f"| per video inside the worker (detect + write), local parallel | {task_seconds(outs[par]):.2f} |")
        print(f"| per video inside the run (detect + write), sequential | {task_seconds(outs[seq]):.2f} |")
        print(f"| per video inside the run (detect + write), sequential, 1 torch thread | "
              f"{task_seconds(outs['sequential, 1 torch thread']):.2f} |")


if __name__ == "__main__":
    main()
