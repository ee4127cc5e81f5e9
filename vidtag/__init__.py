"""vidtag: offline video annotation with per-frame and temporal detectors.

The data flows one way: decode -> model -> link -> write.  Library users call
:func:`vidtag.detect` for one video; the ``vidtag`` command wraps the same API.

The modules sit in layers; a module imports its own layer and those below it,
never one above (``tests/test_layers.py`` checks every import, lazy ones too):

    types (types, errors, coco_classes, heap, timing) -> ops
    -> io (io, weights, degrade, synth, testclip) -> shots (shots, stride)
    -> models -> linking (linking, seqnms_reference) -> formats -> eval
    -> pipeline (pipeline, train) -> batch (batch, parallel, cluster, export)
    -> api (api, this package's names) -> cli

``tools/`` and ``benchmarks/`` import only the package.

``import vidtag`` leaves the process's malloc alone unless
``VIDTAG_MALLOC_TUNING=1`` asks for :mod:`vidtag.heap`'s settings (the
``vidtag`` command applies them itself unless it is ``0``).  It imports
nothing heavy: the names below load on first use.
"""

import os

__version__ = "0.1.0"

if os.environ.get("VIDTAG_MALLOC_TUNING") == "1":  # before numpy / torch start their threads
    from vidtag.heap import limit_heap_growth

    limit_heap_growth()

_LAZY = {"Detections": "vidtag.types", "VideoInfo": "vidtag.types", "VideoError": "vidtag.errors"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtag' has no attribute {name!r}")


def detect(*args, **kwargs):
    """Run detection (and linking) on one video; see :func:`vidtag.api.detect`."""
    from vidtag.api import detect as _detect

    return _detect(*args, **kwargs)


__all__ = ["Detections", "VideoError", "VideoInfo", "detect", "__version__"]
