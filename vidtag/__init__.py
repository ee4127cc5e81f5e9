"""vidtag: offline video annotation with per-frame and temporal detectors.

The data flows one way: decode -> model -> link -> write.  Library users call
:func:`vidtag.detect` for one video; the ``vidtag`` command wraps the same API.
"""

__version__ = "0.1.0"

from vidtag.heap import limit_heap_growth

limit_heap_growth()

from vidtag.errors import VideoError
from vidtag.types import Detections, VideoInfo


def detect(*args, **kwargs):
    """Run detection (and linking) on one video; see :func:`vidtag.api.detect`."""
    from vidtag.api import detect as _detect

    return _detect(*args, **kwargs)


__all__ = ["Detections", "VideoError", "VideoInfo", "detect", "__version__"]
