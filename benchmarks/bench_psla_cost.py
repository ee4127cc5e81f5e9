"""Per-frame network cost of PSLA + RFU + DenseFT against per-frame NanoDet-g.

For each candidate split of the backbone (N_l = stages 0..k, k = 0, 1, 2) and
each place for the temporal feature (after the head's 3x3 conv, "head", or
the neck output, "neck") it times, on 768x576 frames letterboxed to 416x320:

* per-frame NanoDet, batch 8 (the pipeline's default batch);
* a PSLA key frame, batch 1: backbone + neck (+ head conv) + RFU + predictor;
* a PSLA non-key frame, batch 9 (the rest of a segment): N_l + Transform Net +
  PSLA + Quality Net + predictor;
* the average per frame at key interval l: ``(key + (l - 1) * non-key) / l``,
  and the speed-up over per-frame NanoDet;
* "seg": what the video detector really runs, ``PSLADetector.forward_segment``
  on a whole segment of l frames (N_l batched over all l frames, the key
  frame's N_f continuing from its own N_l output), per frame, and its speed-up.

Network time only (letterbox and post-processing are the same per frame for
both).  Median of ``--repeats`` runs after a warm-up; random weights for the
new modules (their cost does not depend on the values).

    python benchmarks/bench_psla_cost.py [--threads 1] [--repeats 7] [--interval 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtag.timing import median_ms  # noqa: E402

REPRODUCE = "python benchmarks/bench_psla_cost.py " + " ".join(sys.argv[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared 2-core box)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--interval", type=int, default=10, help="key frame interval l")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--features", nargs="+", default=["head", "neck"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from vidtag.models.nanodet import load_nanodet
    from vidtag.models.preprocess import letterbox
    from vidtag.models.psla import PSLAConfig, build_psla

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"reproduce: {REPRODUCE}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}")

    frames = torch.randint(0, 256, (args.interval, args.height, args.width, 3), dtype=torch.uint8, device=device)
    x, box = letterbox(frames, args.imgsz)
    print(f"frames {args.width}x{args.height} -> input {box.input[0]}x{box.input[1]}, interval {args.interval}")
    detector = load_nanodet(device=device)
    batch = min(8, args.interval)

    def timed(fn, n):
        def run():
            fn()
            sync()

        with torch.inference_mode():
            return median_ms(run, args.repeats) / n

    base = timed(lambda: detector(x[:batch]), batch)
    print(f"per-frame NanoDet (batch {batch}): {base:.2f} ms/frame\n")
    header = (
        f"{'feature':>7} {'split':>5} {'N_l':>12} {'key ms':>8} {'non-key ms':>10} {'avg ms':>8} {'speed-up':>8}"
        f" {'seg ms':>8} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for feature in args.features:
        for split in args.splits:
            model = build_psla(detector, PSLAConfig(key_interval=args.interval, split_stage=split, feature=feature))
            key_x, rest = x[:1], x[1:]
            with torch.inference_mode():
                memory = model.forward_segment(x, args.interval // 2, None)[1]

            def key_frame():  # N_l, the rest of N_f, Transform(Fl_k) for the non-key affinity, RFU, N_t
                low = model.low_features(key_x)
                high = model.high_features(None, low)
                model.predict(list(model.update_memory(high, memory, model._key_side(low)).features))

            def nonkey_frames():
                model.predict(model.nonkey_features(rest, memory)[0])

            key_ms = timed(key_frame, 1)
            nonkey_ms = timed(nonkey_frames, len(rest)) if len(rest) else 0.0
            avg = (key_ms + (args.interval - 1) * nonkey_ms) / args.interval
            segment = timed(lambda: model.forward_segment(x, args.interval // 2, memory), args.interval)
            stages = f"stages 0-{split}" if split else "stage 0"
            print(
                f"{feature:>7} {split:>5} {stages:>12} {key_ms:8.2f} {nonkey_ms:10.2f} {avg:8.2f} {base / avg:7.2f}x"
                f" {segment:8.2f} {base / segment:7.2f}x"
            )


if __name__ == "__main__":
    main()
