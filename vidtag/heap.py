"""Keep the process heap from growing with video length (glibc only).

Frames are decoded in one thread, drawn in another and encoded in a third.
With glibc's defaults each thread gets its own arena, the megabytes freed
across threads stay in those arenas, and the dynamic trim threshold keeps
them from the OS: benchmarks/bench_memory.py printed growths of 189 to
968 MB over a 10,000-frame video.  One arena and a fixed 1 MiB trim
threshold keep it flat (113 MB); vidtag's threads hand over whole frames,
so they rarely contend for the one arena.  The settings only take effect
before the first threads and large allocations, so ``import vidtag`` makes
them; set ``VIDTAG_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TRIM_THRESHOLD_BYTES = 1 << 20
ARENAS = 1
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_ARENA_MAX = -8


def limit_heap_growth() -> bool:
    """Set glibc's trim threshold and arena count; False where not possible or opted out."""
    if os.environ.get("VIDTAG_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(mallopt(_M_ARENA_MAX, ARENAS))
