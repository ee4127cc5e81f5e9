"""Copy the robustness benchmark's figures for the shipped PSLA modules into their manifest.

    python tools/record_psla_figures.py [benchmarks/results/robustness.json] [weights/psla-nanodet-g.json]

Writes ``measured``: the benchmark command, and for ``frame`` and every ``psla``
setting of that run the pooled AP50 (degraded clip, degraded frames only, clean
clip = fidelity) and frames/s with the ratio to ``frame``.  Refuses a results
file made with other modules (sha256 of the modules file is compared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    results_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "robustness.json"
    manifest_path = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "weights" / "psla-nanodet-g.json"
    results = json.loads(results_path.read_text())
    manifest = json.loads(manifest_path.read_text())
    used = results.get("modules_sha256", {}).get("psla", results.get("psla_sha256"))
    if used != manifest["sha256"]:
        raise SystemExit(f"{results_path}: made with PSLA modules {used}, not {manifest['sha256']} ({manifest_path.name})")
    rows = {(r["method"], r["link"]): r["pooled"] for r in results["results"]}
    frame_fps = rows[("frame", "none")]["fps"]
    figures = {}
    for (method, link), pooled in rows.items():
        if method == "frame" or method.startswith("psla"):
            figures[method if link == "none" else f"{method}+{link}"] = {
                "ap50_degraded_clip": round(100 * pooled["ap50_degraded_all"], 1),
                "ap50_degraded_frames_only": round(100 * pooled["ap50_degraded_only"], 1),
                "ap50_clean_clip_fidelity": round(100 * pooled["ap50_clean_clip"], 1),
                "frames_per_s": round(pooled["fps"], 1),
                "speed_vs_frame": round(pooled["fps"] / frame_fps, 2),
            }
    manifest["measured"] = {"command": results["command"], "scope": "pooled over the held-out halves of vtest.avi and bikes.mp4",
                            "settings": figures}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(figures)} settings into {manifest_path}")


if __name__ == "__main__":
    main()
