"""Time vidtag.linking (Seq-NMS, Seq-NMS+) against the plain reference.

    python benchmarks/bench_linking.py [--frames 1000] [--reference-frames 1000] [--seed 0]

The sequence: 30 objects (3 per class, 10 classes) moving smoothly across a
1280x720 frame, each detected with jittered boxes and scores, 5% of the time
missed, with one weaker near-duplicate box; the rest of the 100 boxes per
frame is clutter (random boxes, classes and low scores).  The fast linker runs
on the full sequence; fast and reference are compared (same tracks, same ids,
scores allclose) and timed on the first ``--reference-frames`` frames, which
is the whole sequence when the two numbers are equal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: vidtag

from vidtag.linking import link  # noqa: E402
from vidtag.seqnms_reference import reference_link  # noqa: E402
from vidtag.types import Detections  # noqa: E402

WIDTH, HEIGHT = 1280, 720
NUM_CLASSES = 10
NUM_OBJECTS = 30
BOXES_PER_FRAME = 100


def make_sequence(num_frames: int, seed: int) -> list[Detections]:
    """The benchmark video's detections: ``num_frames`` frames of 100 boxes."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 200, (NUM_OBJECTS, 2))
    start = rng.uniform(0, 1, (NUM_OBJECTS, 2)) * ([WIDTH, HEIGHT] - size)
    velocity = rng.uniform(-3, 3, (NUM_OBJECTS, 2))
    wobble = rng.uniform(5, 40, (NUM_OBJECTS, 2))
    phase = rng.uniform(0, 2 * np.pi, (NUM_OBJECTS, 1))
    base_score = rng.uniform(0.5, 0.95, NUM_OBJECTS)
    labels = np.arange(NUM_OBJECTS) % NUM_CLASSES

    frames = []
    for t in range(num_frames):
        centre = start + size / 2 + velocity * t + wobble * np.sin(0.05 * t + phase)
        centre = np.abs(np.mod(centre, 2 * np.array([WIDTH, HEIGHT])) - [WIDTH, HEIGHT])  # bounce
        seen = rng.random(NUM_OBJECTS) > 0.05
        obj = np.concatenate([centre - size / 2, centre + size / 2], axis=1) + rng.normal(0, 2, (NUM_OBJECTS, 4))
        dup = obj + rng.normal(0, 0.08, (NUM_OBJECTS, 4)) * np.tile(size, 2)
        obj_scores = np.clip(base_score + rng.normal(0, 0.05, NUM_OBJECTS), 0.01, 1.0)
        dup_scores = obj_scores * rng.uniform(0.4, 0.9, NUM_OBJECTS)
        boxes = [obj[seen], dup[seen]]
        scores = [obj_scores[seen], dup_scores[seen]]
        classes = [labels[seen], labels[seen]]

        n_clutter = BOXES_PER_FRAME - 2 * int(seen.sum())
        wh = rng.uniform(20, 150, (n_clutter, 2))
        xy = rng.uniform(0, 1, (n_clutter, 2)) * ([WIDTH, HEIGHT] - wh)
        boxes.append(np.concatenate([xy, xy + wh], axis=1))
        scores.append(rng.uniform(0.05, 0.5, n_clutter))
        classes.append(rng.integers(0, NUM_CLASSES, n_clutter))

        perm = rng.permutation(BOXES_PER_FRAME)
        frames.append(
            Detections(
                np.concatenate(boxes)[perm].astype(np.float32),
                np.concatenate(scores)[perm].astype(np.float32),
                np.concatenate(classes)[perm],
            )
        )
    return frames


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def same_result(fast: list[Detections], ref: list[Detections]) -> bool:
    return len(fast) == len(ref) and all(
        np.array_equal(f.boxes, r.boxes)
        and np.array_equal(f.labels, r.labels)
        and np.array_equal(f.track_ids, r.track_ids)
        and np.allclose(f.scores, r.scores, rtol=0, atol=1e-6)
        for f, r in zip(fast, ref)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--reference-frames", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="fast timings: best of this many runs")
    args = parser.parse_args()

    print(
        "command: python benchmarks/bench_linking.py "
        f"--frames {args.frames} --reference-frames {args.reference_frames} --seed {args.seed} --repeats {args.repeats}"
    )
    frames = make_sequence(args.frames, args.seed)
    prefix = frames[: args.reference_frames]
    print(f"sequence: {len(frames)} frames x {BOXES_PER_FRAME} boxes, {NUM_CLASSES} classes, seed {args.seed}")

    compared = "the full sequence" if len(prefix) == len(frames) else f"ONLY the first {len(prefix)} frames"
    print(f"fast == reference checked, and the reference timed, on {compared} (no extrapolation)")
    print(f"fast timings: best of {args.repeats} runs; reference: one run")
    print()

    header = ("method", "frames", "tracks", "fast s", "reference s", "speed-up", "fast == reference")
    table = [header]
    all_same = True
    for method in ("seqnms+", "seqnms"):
        inputs = [prefix] if len(prefix) == len(frames) else [frames, prefix]
        for video in inputs:
            out, _ = timed(link, video, method)
            fast_s = min(timed(link, video, method)[1] for _ in range(args.repeats))
            num_tracks = max((int(d.track_ids.max()) for d in out if len(d)), default=0)
            row = [method, str(len(video)), str(num_tracks), f"{fast_s:.3f}", "-", "-", "-"]
            if video is prefix:
                ref_out, ref_s = timed(reference_link, video, method)
                same = same_result(out, ref_out)
                all_same &= same
                row[4:] = [f"{ref_s:.2f}", f"{ref_s / fast_s:.0f}x", "yes" if same else "NO"]
            table.append(tuple(row))

    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if not all_same:
        sys.exit(1)


if __name__ == "__main__":
    main()
