"""NanoDet-g in torch, ONNX Runtime and OpenVINO on this CPU: speed and agreement.

    python benchmarks/bench_runtime.py [--clip examples/pedestrians.mp4] [--frames 200] [--threads 2] [--repeats 5]

The clip's frames are letterboxed once (``--imgsz`` 416) and run in batches
of 8 by each runtime, interleaved ``--repeats`` times (network only:
decoding and post-processing are the same for all).  Agreement with torch:
the largest absolute difference of the class scores, and AP50 of each
runtime's detections (default thresholds) against torch's boxes with score
>= 0.4 as ground truth (pycocotools, every class present), the test the
default runtime must pass at >= 0.99.  OpenVINO runs the shipped ONNX export
(both parts) at f32 and, where the CPU has bf16 units, at bf16; and, as
``--method frame`` runs it, the two parts joined behind the normalisation and
padding, from the resized uint8 pixels.

Also: each method (frame, psla, iff) as ``vidtag detect`` runs it at its
default runtime, its boxes against the same method's in torch over the whole
clip (AP50, torch's boxes with score >= 0.4 as ground truth); and the same
check for decoding straight to the network's size (what
``vidtag detect`` does when no output needs full-size frames: FFmpeg's
bilinear scaler instead of torch's antialiased resize), torch's boxes from
either input.

Writes ``benchmarks/results/runtime.json`` under ``--out`` (default: the repo).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(ROOT / "examples" / "pedestrians.mp4"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT))
    args = parser.parse_args()

    import torch

    from vidtag.eval.robustness import ap50, to_video_boxes
    from vidtag.io.decode import iter_chunks
    from vidtag.models.build import DetectOptions
    from vidtag.models.nanodet import load_nanodet
    from vidtag.models.preprocess import letterbox, resize_for_input
    from vidtag.models.runtime import OnnxNanoDet, OpenVinoNanoDet
    from vidtag.weights import resolve_weights

    torch.set_num_threads(args.threads)
    manifest = resolve_weights("nanodet-g-coco")
    frames = torch.cat([c.frames for c in iter_chunks(args.clip, chunk_size=BATCH)])[: args.frames]
    batches = [letterbox(frames[s : s + BATCH], args.imgsz) for s in range(0, len(frames), BATCH)]
    runtimes = {"torch (eager, channels-last)": load_nanodet(manifest), "onnxruntime": OnnxNanoDet(manifest, args.threads)}
    runtimes["openvino f32"] = OpenVinoNanoDet(manifest, args.threads, precision="f32")
    auto = OpenVinoNanoDet(manifest, args.threads)  # bf16 where the CPU has it
    if auto.precision == "bf16":
        runtimes["openvino bf16 (the default here)"] = auto

    # what `--method frame` runs on OpenVINO: the resized uint8 pixels into one graph that normalises and pads
    pixels = [resize_for_input(frames[s : s + BATCH], args.imgsz) for s in range(0, len(frames), BATCH)]
    calls = {name: [functools.partial(model, x) for x, _ in batches] for name, model in runtimes.items()}
    calls[f"openvino {auto.precision}, uint8 pixels in (--method frame)"] = [functools.partial(auto.from_pixels, p, box) for p, box in pixels]
    runtimes = calls

    options = DetectOptions()
    outputs, seconds = {}, {name: [] for name in runtimes}
    with torch.inference_mode():
        for name, batch_calls in runtimes.items():  # warm-up, and the outputs compared below
            outputs[name] = [call() for call in batch_calls]
        for _ in range(args.repeats):
            for name, batch_calls in runtimes.items():
                t0 = time.perf_counter()
                for call in batch_calls:
                    call()
                seconds[name].append(time.perf_counter() - t0)

    classes = manifest.classes
    reference = [d for out, (_, box) in zip(outputs["torch (eager, channels-last)"], batches) for d in options.postprocess(out, box)]
    ids = range(len(reference))
    gt = {"clip": to_video_boxes("clip", reference, classes, ids, min_score=0.4)}
    rows = []
    base = statistics.median(seconds["torch (eager, channels-last)"])
    for name in runtimes:
        dets = [d for out, (_, box) in zip(outputs[name], batches) for d in options.postprocess(out, box)]
        diff = max(float((a.cls_scores - b.cls_scores).abs().max())
                   for a, b in zip(outputs[name], outputs["torch (eager, channels-last)"]))
        sec = statistics.median(seconds[name])
        rows.append({"runtime": name, "frames_per_s": round(len(frames) / sec, 1), "speed_vs_torch": round(base / sec, 2),
                     "max_abs_cls_diff": diff, "ap50_vs_torch": ap50(gt, {"clip": to_video_boxes("clip", dets, classes, ids)}, classes)})

    from vidtag.io.decode import probe
    from vidtag.models.build import DetectorSettings, build_detector
    from vidtag.ops.letterbox import plan_letterbox

    info = probe(args.clip)
    frame_detector = build_detector(DetectorSettings("frame", device="cpu", runtime="torch"))[0]
    full = list(frame_detector.run(iter_chunks(args.clip, chunk_size=BATCH, info=info)))
    size = plan_letterbox((info.width, info.height), args.imgsz)[1]
    scaled = list(frame_detector.run(iter_chunks(args.clip, chunk_size=BATCH, info=info, size=size)))
    whole = range(len(full))
    decode_ap = ap50({"clip": to_video_boxes("clip", full, classes, whole, min_score=0.4)},
                     {"clip": to_video_boxes("clip", scaled, classes, whole)}, classes)

    # each method as `vidtag detect` runs it: the default runtime's boxes against torch's, whole clip
    methods = []
    for method in ("frame", "psla", "iff"):
        boxes, engines = {}, {}
        for runtime in ("torch", "auto"):
            detector = build_detector(DetectorSettings(method, device="cpu", runtime=runtime))[0]
            engines[runtime] = detector.runtime
            boxes[runtime] = list(detector.run(iter_chunks(args.clip, chunk_size=BATCH, info=info, size=size)))
        methods.append({"method": method, "runtime": engines["auto"], "ap50_vs_torch": ap50(
            {"clip": to_video_boxes("clip", boxes["torch"], classes, whole, min_score=0.4)},
            {"clip": to_video_boxes("clip", boxes["auto"], classes, whole)}, classes)})

    command = "python benchmarks/bench_runtime.py " + " ".join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    h, w = batches[0][0].shape[-2:]
    print(f"Command: `{command.strip()}` (commit {commit}, {time.strftime('%Y-%m-%d')})")
    print()
    print(f"{len(frames)} frames of {Path(args.clip).name} at {w}x{h}, batch {BATCH}, {args.threads} threads, "
          f"median of {args.repeats} interleaved passes.")
    print()
    print("| runtime | frames/s | vs torch | max abs class-score difference | AP50 against torch's boxes |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['runtime']} | {r['frames_per_s']:.1f} | {r['speed_vs_torch']:.2f}x | {r['max_abs_cls_diff']:.1e} | "
              f"{100 * r['ap50_vs_torch']:.1f} |")
    print()
    print(f"Decoded straight to {size[0]}x{size[1]} (all {len(full)} frames, torch): AP50 {100 * decode_ap:.1f} against the boxes "
          "from full-size frames resized by torch.")
    print()
    print(f"Each method at its default runtime against the same method in torch (all {len(full)} frames, decoded to {size[0]}x{size[1]}):")
    print()
    print("| method | default runtime | AP50 against torch's boxes |")
    print("|---|---|---:|")
    for m in methods:
        print(f"| {m['method']} | {m['runtime']} | {100 * m['ap50_vs_torch']:.1f} |")
    record = {"decode_to_size_ap50_vs_full": decode_ap, "methods_vs_torch": methods, "command": command.strip(), "commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "processor": platform.processor(), "threads": args.threads, "frames": len(frames), "rows": rows}
    target = Path(args.out) / "benchmarks" / "results" / "runtime.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
