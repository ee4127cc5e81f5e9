"""Running `vidtag` commands in-process for the CLI tests."""

from __future__ import annotations

from click.testing import CliRunner

from vidtag.cli import main


def invoke(*args):
    """Run ``vidtag ARGS`` (paths and numbers as strings); fails the test on a traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output + (result.stderr or ""), result.output + result.stderr
    return result


FAST_DETECT = ["--imgsz", "128", "-q", "--conf", "0.05"]
"""Small input and a low threshold: the synthetic test clips give boxes and tracks."""


def detect_clip(folder, n_frames: int, *formats: str):
    """Make ``folder/walk.mp4`` (96x64) and run ``vidtag detect`` on it into ``folder/run``
    with ``formats`` (and coco): (the run folder, its parsed COCO file)."""
    import json

    from tests.clips import make_clip

    clip = make_clip(folder / "walk.mp4", n_frames=n_frames, width=96, height=64, fps=10)
    out = folder / "run"
    result = invoke("detect", clip, "-o", out, *(a for f in ("coco", *formats) for a in ("--format", f)), *FAST_DETECT)
    assert result.exit_code == 0, result.stderr
    return out, json.loads((out / "walk.coco.json").read_text())
