"""Peak RSS over a long generated video stays flat.

Runs the whole `vidtag detect` path (decode -> model -> Seq-NMS+ -> every
format, in process through ``vidtag.api.annotate``) on a generated 10,000-frame video and samples the process RSS every
20 ms in a background thread through every stage (decode, model, linking,
writing).  Target: peak RSS within 200 MB of the RSS after 500 frames.

    python benchmarks/bench_memory.py [--frames 10000] [--imgsz 160] [--out DIR]

Writes ``benchmarks/results/memory.json`` under ``--out`` (default: the repo).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--imgsz", type=int, default=160, help="small input keeps the run short; memory is what is measured")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1]), help="folder the results go under (default: the repo)")
    args = parser.parse_args()

    from vidtag.api import Settings, annotate
    from vidtag.heap import resident_mb
    from vidtag.testclip import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        make_clip(video, n_frames=args.frames, width=args.width, height=args.height, fps=30)
        print(f"generated {video.name}: {args.frames} frames {args.width}x{args.height} in {time.perf_counter() - t0:.0f} s")
        import threading

        reached_500 = threading.Event()
        samples: list[tuple[bool, float]] = []  # (after frame 500?, RSS MB), every 20 ms, all stages
        stop = threading.Event()

        def sample():
            while not stop.wait(0.02):
                samples.append((reached_500.is_set(), resident_mb()))

        def on_progress(stage, done, total):
            if stage == "detect" and done >= 500 and not reached_500.is_set():
                samples.append((False, resident_mb()))
                reached_500.set()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        summary = annotate([video], Path(tmp) / "out", settings=Settings(imgsz=args.imgsz), on_progress=on_progress)
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
        first = next(i for i, (flag, _) in enumerate(samples) if flag)
        at_500 = samples[first - 1][1]
        peak = max(rss for flag, rss in samples[first:])
        record = summary.records[0]
        assert record["status"] == "done", record
        growth = peak - at_500
        print()
        print("| frames | RSS after 500 frames (MB) | peak RSS after that (MB) | growth (MB) | target | run time (s) |")
        print("|---:|---:|---:|---:|---|---:|")
        print(f"| {record['frames']} | {at_500:.0f} | {peak:.0f} | {growth:.0f} | <= 200 MB: {'met' if growth <= 200 else 'NOT met'} | {seconds:.0f} |")
    import json
    import subprocess

    root = Path(__file__).resolve().parents[1]
    result = {"command": ("python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])).strip(),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip(),
              "date": time.strftime("%Y-%m-%d"), "frames": record["frames"], "size": f"{args.width}x{args.height}",
              "imgsz": args.imgsz, "rss_at_500_mb": round(at_500, 1), "peak_after_mb": round(peak, 1),
              "growth_mb": round(growth, 1), "target_growth_mb": 200, "seconds": round(seconds, 1)}
    target = Path(args.out) / "benchmarks" / "results" / "memory.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
