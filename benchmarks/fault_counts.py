"""Run the fault tests and print how many cases each scenario tried and passed.

Runs ``pytest tests/test_faults.py`` (SIGKILL mid-batch, disk full, two runs
into one folder, 200 corrupted MP4s, a 30,000-frame video); each test notes
its counts in a file this script names through ``VIDTAG_FAULT_COUNTS``.
Prints a markdown table for benchmarks/RESULTS.md, and pytest's own closing
line.  Exits with pytest's status.

    python benchmarks/fault_counts.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.jsonl"
        env = dict(os.environ, VIDTAG_FAULT_COUNTS=str(counts))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_faults.py"],
                                cwd=ROOT, env=env, capture_output=True, text=True)
        rows = [json.loads(line) for line in counts.read_text().splitlines()] if counts.exists() else []
    closing = [line for line in result.stdout.splitlines() if line.strip()][-1:] or ["(no pytest output)"]
    print("command: python benchmarks/fault_counts.py")
    print(f"pytest: {closing[0]}")
    print()
    print("| scenario | cases tried | passed | what was checked |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['scenario']} | {row['tried']} | {row['passed']} | {row['detail']} |")
    print(f"| **total** | {sum(r['tried'] for r in rows)} | {sum(r['passed'] for r in rows)} | |")
    if result.returncode != 0:
        print(result.stdout[-4000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
