"""Test clips: the package's test pattern (:mod:`vidtag.testclip`) and broken inputs.

Import from any test as ``from tests.clips import make_clip`` (``tests`` is a
package; pytest runs from the repository root).
"""

from __future__ import annotations

from pathlib import Path

from vidtag.testclip import frame_at, make_clip, write_tone

__all__ = ["frame_at", "make_bad_videos", "make_clip"]


def make_bad_videos(d: Path, W: int = 64, H: int = 48, FPS: float = 25) -> dict[str, tuple[Path, str]]:
    """Write broken inputs into folder ``d``: name -> (path, phrase the error must contain).

    missing, directory, empty, text, audio only, unfinished mp4 (no moov),
    truncated (faststart MP4 cut at 60%), unknown codec, no frames.
    """
    files = {}
    files["missing"] = (d / "missing.mp4", "file not found")
    (d / "folder.mp4").mkdir()
    files["directory"] = (d / "folder.mp4", "directory")
    (d / "empty.mp4").write_bytes(b"")
    files["empty"] = (d / "empty.mp4", "empty file (0 bytes)")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    files["text"] = (d / "text.mp4", "not a video: cannot parse the container")

    import av

    with av.open(str(d / "tone.m4a"), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        write_tone(stream, out, 0.5)
    files["audio only"] = (d / "tone.m4a", "no video stream (audio only)")

    full = make_clip(d / "full.mp4", 40, W, H, FPS).read_bytes()
    (d / "no_moov.mp4").write_bytes(full[: len(full) // 2])  # moov is written last
    files["unfinished mp4"] = (d / "no_moov.mp4", "truncated or unfinished MP4")

    with av.open(str(d / "full.mp4")) as src, av.open(
        str(d / "faststart.mp4"), "w", options={"movflags": "+faststart"}
    ) as dst:
        vs = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = vs
                dst.mux(packet)
    fs = (d / "faststart.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(fs[: int(len(fs) * 0.6)])
    files["truncated"] = (d / "cut.mp4", "truncated file")

    avi = make_clip(d / "mjpeg.avi", 5, W, H, FPS, codec="mjpeg").read_bytes()
    (d / "unknown.avi").write_bytes(avi.replace(b"MJPG", b"QQQQ").replace(b"mjpg", b"qqqq"))
    files["unknown codec"] = (d / "unknown.avi", "unsupported video codec")

    files["no frames"] = (make_clip(d / "noframes.mkv", 0, W, H, FPS, audio=True), "no decodable frames")
    return files
