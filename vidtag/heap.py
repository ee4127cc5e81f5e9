"""glibc malloc settings for a video pipeline: flat memory, no page-fault storm.

Two problems, both from glibc's defaults (``benchmarks/bench_memory.py``
measures both; figures in benchmarks/RESULTS.md):

* Growth.  Frames are decoded in one thread, drawn in another and encoded
  in a third.  Each thread gets its own arena, and megabytes freed across
  threads stay in those arenas, so memory grows over a long video.  One
  arena keeps it flat; vidtag's threads hand over whole frames, so they
  rarely contend for it.
* Speed.  Blocks above the mmap threshold get fresh pages from the kernel
  on every allocation and give them back on free, so each activation map of
  every frame is page-faulted and zeroed again.  Setting a fixed trim
  threshold (as vidtag once did for the growth) also freezes that threshold
  at 128 KiB, and glibc never raises it above 32 MiB anyway.  Serving every
  allocation from the heap (``M_MMAP_MAX = 0``), trimming its top only above
  ``TRIM_THRESHOLD_BYTES`` and growing it ``TOP_PAD_BYTES`` at a time keeps
  the pages a frame used for the next one.  The heap then stays near the process's peak use (plus at
  most the trim threshold) instead of shrinking between frames.

The settings only take effect before the first threads and large
allocations.  They change the whole process, so a library must not impose
them: the ``vidtag`` command makes them when ``vidtag.cli`` is imported
(``VIDTAG_MALLOC_TUNING=0`` leaves malloc alone), and a program that uses
vidtag as a library opts in with ``VIDTAG_MALLOC_TUNING=1`` (applied by
``import vidtag``) or by calling :func:`limit_heap_growth` before it starts
threads.  Other C libraries (macOS, musl) are left alone.

:func:`resident_mb` reads the resident set size that the memory test and
benchmarks/bench_memory.py check.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENAS = 1
TRIM_THRESHOLD_BYTES = 128 << 20
TOP_PAD_BYTES = 16 << 20
MMAP_MAX = 0  # no allocation is served by mmap (glibc still falls back to it if the heap cannot grow)
# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def limit_heap_growth() -> bool:
    """Apply the settings above; False where not possible (not glibc) or ``VIDTAG_MALLOC_TUNING=0``."""
    if os.environ.get("VIDTAG_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, ARENAS), (_M_MMAP_MAX, MMAP_MAX), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES))
    applied = [bool(mallopt(param, value)) for param, value in settings]  # every one, even after a failure
    return all(applied)


def resident_mb() -> float:
    """This process's resident set size in MiB (``VmRSS`` of /proc/self/status).

    Raises:
        RuntimeError: the platform has no /proc/self/status with a VmRSS line.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError as err:
        raise RuntimeError(f"/proc/self/status: cannot read the resident set size ({err})") from None
    raise RuntimeError("/proc/self/status: no VmRSS line")
