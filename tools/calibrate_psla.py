"""Choose the Quality Net bias of trained PSLA modules on the TRAINING frames and record it in their manifest.

    python tools/calibrate_psla.py [weights/psla-nanodet-g.json] [--biases 0,0.5,1,1.5,2,3]
                                   [--footage ../shared/footage] [--seed 500] [--write]

Why.  DenseFT fuses the propagated feature ``P_i`` with ``T_i``, the Transform
Net's guess from the stem alone, with weights from the Quality Net.  Trained
by distillation, the Quality Nets can put much of the weight on ``T_i``
although it is the worse feature (further from the teacher's feature than
``P_i``).  ``PSLAConfig.quality_bias`` adds a logit to the ``P_i`` side at
inference; this tool picks it.

How.  The clips of ``benchmarks/robustness.py`` (vtest, bikes; the protocol
is :mod:`vidtag.eval.robustness`), but their first halves: the frames the
modules were trained on, never the held-out halves the benchmark scores.  Degradations as in the benchmark (fraction 0.4,
bursts of 3-8 frames) with seeds ``--seed + k`` outside the benchmark's
reserved 1000-1999.  Pseudo ground truth and AP50 as in the benchmark
(per-frame NanoDet-g boxes with score >= 0.4 on the clean frames; classes with
at least 20 boxes).  For every bias: pooled AP50 on the degraded frames and
on the clean clips (fidelity); the bias with the highest sum of the two wins
(ties: the smaller bias).  ``--write`` stores it in the manifest's
``psla_config.quality_bias`` with a ``calibration`` record (the table, the
command); the modules file itself is untouched.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidtag.eval import robustness as protocol  # noqa: E402  (the benchmark's clips, scoring and seeds)

DEFAULT_FOOTAGE = ROOT.parent / "shared" / "footage"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", default=str(ROOT / "weights" / "psla-nanodet-g.json"))
    parser.add_argument("--biases", default="0,0.5,1,1.5,2,3", help="quality_bias values to try, comma-separated")
    parser.add_argument("--footage", default=str(DEFAULT_FOOTAGE))
    parser.add_argument("--seed", type=int, default=500, help="degradation seed of the first clip (not in 1000-1999)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the chosen bias in the manifest")
    args = parser.parse_args()
    lo, hi = protocol.RESERVED_SEEDS
    if args.seed <= hi and args.seed + len(protocol.CLIPS) - 1 >= lo:  # clip k uses seed + k
        raise SystemExit(f"--seed {args.seed}: seeds {lo}-{hi} are the benchmark's")
    biases = sorted({float(b) for b in args.biases.split(",")})

    import torch

    from vidtag.models.build import DetectorSettings, build_detector

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    clips = [protocol.HeldOutClip(c, k, Path(args.footage), args.seed, None, part="training") for k, c in enumerate(protocol.CLIPS)]
    frame, _ = build_detector(DetectorSettings("frame", device="cpu", runtime="torch"))  # both in torch: compare like with like
    classes = frame.classes
    pseudo_gt = protocol.PseudoGT.from_detections({c.clip.name: protocol.run_model(frame, c, False)[0] for c in clips},
                                                  {c.clip.name: c.mask for c in clips}, classes,
                                                  sizes={c.clip.name: c.frames.shape[2:0:-1] for c in clips})
    gt, gt_deg = pseudo_gt.every_frame, pseudo_gt.degraded_frames
    scored = protocol.scored_classes(gt, classes)
    print("training frames: " + ", ".join(f"{c.clip.name} 0-{len(c) - 1} (seed {c.seed})" for c in clips) + f"; classes scored: {', '.join(scored)}")

    rows = []
    print("| quality_bias | AP50 degraded frames | fidelity | sum |")
    print("|---:|---:|---:|---:|")
    for bias in biases:
        detector, _ = build_detector(DetectorSettings("psla", device="cpu", psla_options={"quality_bias": bias}, psla_weights=args.manifest, runtime="torch"))
        pred, pred_clean = {}, {}
        for c in clips:
            pred[c.clip.name] = protocol.to_video_boxes(c.clip.name, protocol.run_model(detector, c, True)[0], classes, np.arange(len(c)))
            pred_clean[c.clip.name] = protocol.to_video_boxes(c.clip.name, protocol.run_model(detector, c, False)[0], classes, np.arange(len(c)))
        degraded = protocol.ap50(gt_deg, pred, classes, scored)
        fidelity = protocol.ap50(gt, pred_clean, classes, scored)
        rows.append({"quality_bias": bias, "ap50_degraded_only": round(100 * degraded, 1), "fidelity": round(100 * fidelity, 1)})
        print(f"| {bias:g} | {100 * degraded:.1f} | {100 * fidelity:.1f} | {100 * (degraded + fidelity):.1f} |", flush=True)
    best = max(rows, key=lambda r: (r["ap50_degraded_only"] + r["fidelity"], -r["quality_bias"]))
    print(f"chosen quality_bias: {best['quality_bias']:g} ({time.perf_counter() - t_start:.0f} s)")

    if args.write:
        path = Path(args.manifest).with_suffix(".json")
        manifest = json.loads(path.read_text())
        manifest["psla_config"]["quality_bias"] = best["quality_bias"]
        manifest["calibration"] = {
            "command": shlex.join(["python", "tools/calibrate_psla.py", *sys.argv[1:]]),
            "frames": {c.clip.name: [0, len(c) - 1] for c in clips},
            "seeds": {c.clip.name: c.seed for c in clips},
            "classes_scored": scored,
            "table": rows,
            "chosen": {"quality_bias": best["quality_bias"], "rule": "highest AP50 degraded frames + fidelity, pooled"},
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote quality_bias {best['quality_bias']:g} into {path}")


if __name__ == "__main__":
    main()
