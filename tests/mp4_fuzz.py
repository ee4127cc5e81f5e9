"""Seeded byte-level corruptions of a valid MP4, for the fault tests.

:func:`corruptions` turns one valid file into ``n`` broken ones, each made by
one of :data:`KINDS`, chosen and parametrised by a seeded generator, so the
same seed always gives the same files:

* ``flip``: 1 to 64 random bits flipped at random offsets (half of the cases
  aimed inside the ``moov`` index, where one bit changes the whole reading);
* ``truncate``: the file cut at a random length (from a few bytes up);
* ``zero``: a random run of bytes overwritten with zeros;
* ``box-size``: the 32-bit size of a random box (top level or nested) set to
  0, 1, a few bytes, or far past the end of the file;
* ``box-garbage``: the payload of a random box overwritten with random bytes;
* ``splice-header``: the ``moov`` (or ``ftyp``) box replaced by the one of
  another valid clip with other dimensions and frame count, so the index
  points at the wrong bytes;
* ``swap-boxes``: two top-level boxes swapped without fixing the offsets;
* ``duplicate-moov``: a second copy of ``moov``, one of them damaged.

Used by ``tests/test_faults.py`` and ``benchmarks/fault_counts.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

KINDS = ("flip", "truncate", "zero", "box-size", "box-garbage", "splice-header", "swap-boxes", "duplicate-moov")
CONTAINER_BOXES = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex"})


@dataclass(frozen=True)
class Box:
    """One ISO-BMFF box: its type, where it starts and its total size (header included)."""

    kind: bytes
    start: int
    size: int
    depth: int


def parse_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[Box]:
    """Every box in ``data[start:end]``, nested containers included (stops at the first bad size)."""
    end = len(data) if end is None else end
    boxes = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        boxes.append(Box(kind, pos, size, depth))
        if kind in CONTAINER_BOXES:
            boxes.extend(parse_boxes(data, pos + header, pos + size, depth + 1))
        pos += size
    return boxes


def _box(boxes: list[Box], kind: bytes) -> Box | None:
    return next((b for b in boxes if b.kind == kind), None)


def corrupt(data: bytes, kind: str, rng: np.random.Generator, donor: bytes) -> bytes:
    """One corruption of ``data`` of the given ``kind`` (see module doc)."""
    buf = bytearray(data)
    boxes = parse_boxes(data)
    top = [b for b in boxes if b.depth == 0]
    moov = _box(boxes, b"moov")
    if kind == "flip":
        lo, hi = (moov.start, moov.start + moov.size) if moov is not None and rng.random() < 0.5 else (0, len(buf))
        for _ in range(int(rng.integers(1, 65))):
            buf[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf)
    if kind == "truncate":
        return bytes(buf[: int(rng.integers(1, len(buf)))])
    if kind == "zero":
        start = int(rng.integers(0, len(buf)))
        stop = min(len(buf), start + int(rng.integers(1, 512)))
        buf[start:stop] = bytes(stop - start)
        return bytes(buf)
    if kind == "box-size":
        box = boxes[int(rng.integers(0, len(boxes)))]
        size = int(rng.choice([0, 1, 7, 8, box.size // 2, box.size + 13, len(buf) * 4, 0xFFFFFFFF]))
        buf[box.start : box.start + 4] = struct.pack(">I", size)
        return bytes(buf)
    if kind == "box-garbage":
        box = boxes[int(rng.integers(0, len(boxes)))]
        payload = box.size - 8
        if payload > 0:
            n = int(rng.integers(1, payload + 1))
            at = box.start + 8 + int(rng.integers(0, payload - n + 1))
            buf[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        return bytes(buf)
    if kind == "splice-header":
        which = b"moov" if rng.random() < 0.8 else b"ftyp"
        ours, theirs = _box(boxes, which), _box(parse_boxes(donor), which)
        if ours is None or theirs is None:
            return bytes(buf[: len(buf) // 3])
        return bytes(buf[: ours.start]) + donor[theirs.start : theirs.start + theirs.size] + bytes(buf[ours.start + ours.size :])
    if kind == "swap-boxes":
        if len(top) < 2:
            return bytes(buf[::-1])
        i, j = sorted(int(k) for k in rng.choice(len(top), 2, replace=False))
        a, b = top[i], top[j]
        pieces = [data[: a.start], data[b.start : b.start + b.size], data[a.start + a.size : b.start],
                  data[a.start : a.start + a.size], data[b.start + b.size :]]
        return b"".join(pieces)
    if kind == "duplicate-moov":
        if moov is None:
            return bytes(buf) * 2
        copy = bytearray(data[moov.start : moov.start + moov.size])
        for _ in range(8):
            copy[int(rng.integers(8, len(copy)))] ^= 0xFF
        if rng.random() < 0.5:
            return bytes(buf) + bytes(copy)
        return bytes(buf[: moov.start]) + bytes(copy) + bytes(buf[moov.start :])
    raise ValueError(f"unknown corruption kind {kind!r}: choose from {', '.join(KINDS)}")


def corruptions(data: bytes, n: int, seed: int, donor: bytes) -> list[tuple[str, bytes]]:
    """``n`` corrupted copies of ``data``: ``(kind, bytes)``, kinds in turn, seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return [(KINDS[i % len(KINDS)], corrupt(data, KINDS[i % len(KINDS)], rng, donor)) for i in range(n)]


def make_fuzz_inputs(folder, n: int = 200, seed: int = 0) -> list[tuple[str, "object"]]:
    """Write ``n`` corrupted MP4s into ``folder`` (made from two generated clips).

    Half are corruptions of a plain MP4 (index last), half of a faststart one
    (index first).  Returns ``[(kind, path)]`` in batch order; the files are
    named ``NNN-<kind>.mp4``.
    """
    from pathlib import Path

    from tests.clips import make_clip

    folder = Path(folder)
    sources = folder / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    plain = make_clip(sources / "plain.mp4", n_frames=10, width=64, height=48, fps=10).read_bytes()
    donor = make_clip(sources / "donor.mp4", n_frames=23, width=96, height=64, fps=25).read_bytes()
    faststart = _faststart(sources / "plain.mp4", sources / "faststart.mp4").read_bytes()
    cases = corruptions(plain, n - n // 2, seed, donor) + corruptions(faststart, n // 2, seed + 1, donor)
    out = []
    for i, (kind, data) in enumerate(cases):
        path = folder / f"{i:03d}-{kind}.mp4"
        path.write_bytes(data)
        out.append((kind, path))
    return out


def _faststart(src, dst):
    """Remux ``src`` with the index (moov) before the media data."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst
