"""Keep the process heap from growing with video length (glibc only).

Frames are decoded in one thread and freed in another.  With glibc's
default, dynamic trim threshold, the freed megabytes stay in the allocator
and the process grows by hundreds of MB over a long video or a batch
(benchmarks/bench_memory.py shows it).  A fixed 1 MiB threshold returns them
to the OS and keeps memory flat.  It only takes effect when set early, before
the first large allocations, so ``import vidtag`` sets it; set the
environment variable ``VIDTAG_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TRIM_THRESHOLD_BYTES = 1 << 20
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter number


def limit_heap_growth() -> bool:
    """Set glibc's trim threshold; False where that is not possible or opted out."""
    if os.environ.get("VIDTAG_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
