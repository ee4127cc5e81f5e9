"""End-to-end frames/s of `vidtag detect` vs the model alone, in one run.

Model-only: the frames are decoded into memory first, then only
letterbox + network + post-processing are timed.  End-to-end: the whole
`vidtag detect` path on the same clip (decode, model, Seq-NMS+, every format
including the annotated MP4), once on the clip alone and once on a folder of
--copies copies of it (where writing one video overlaps with detecting the
next).  Target: end-to-end >= 85% of model-only.

    python benchmarks/bench_pipeline.py [VIDEO] [--batch 8] [--imgsz 416] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(ROOT / "examples" / "pedestrians.mp4"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--repeat", type=int, default=2, help="alternate the measurements this many times; best of each")
    parser.add_argument("--copies", type=int, default=4, help="videos in the folder run")
    args = parser.parse_args()

    import torch

    from vidtag.api import Runner, Settings, annotate
    from vidtag.io.decode import iter_chunks

    settings = Settings(batch=args.batch, imgsz=args.imgsz, device="cpu")
    runner = Runner(settings)
    chunks = list(iter_chunks(args.video, chunk_size=args.batch))
    frames = sum(len(c) for c in chunks)
    runner.detector.detect_frames(chunks[0].frames)  # warm-up

    import shutil

    model_fps, e2e_fps, folder_fps = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        copies = []
        for i in range(args.copies):
            copies.append(Path(folder) / f"copy{i}{Path(args.video).suffix}")
            shutil.copy(args.video, copies[-1])
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for chunk in chunks:
                runner.detector.detect_frames(chunk.frames)
            model_fps.append(frames / (time.perf_counter() - t0))
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                summary = annotate([args.video], out, settings=settings, runner=runner)
                e2e_fps.append(frames / (time.perf_counter() - t0))
                assert summary.ok, summary.records
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                summary = annotate(copies, out, settings=settings, runner=runner)
                folder_fps.append(len(copies) * frames / (time.perf_counter() - t0))
                assert summary.ok, summary.records

    best_model, best_e2e, best_folder = max(model_fps), max(e2e_fps), max(folder_fps)
    print(f"video: {args.video} ({frames} frames), imgsz {args.imgsz}, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print()
    print("| measurement | frames/s (best of %d) |" % args.repeat)
    print("|---|---:|")
    print(f"| model only (letterbox + NanoDet-g + post-process) | {best_model:.2f} |")
    print(f"| end to end, one video (`vidtag detect`, all 5 formats) | {best_e2e:.2f} |")
    print(f"| end to end, folder of {args.copies} copies | {best_folder:.2f} |")
    for name, fps in (("one video", best_e2e), (f"folder of {args.copies}", best_folder)):
        ratio = fps / best_model
        print(f"| ratio end-to-end / model-only, {name} | {ratio:.1%} (target >= 85%: {'met' if ratio >= 0.85 else 'NOT met'}) |")


if __name__ == "__main__":
    main()
