"""Link per-frame detections into tracks with Seq-NMS or Seq-NMS+.

Seq-NMS (Han et al. 2016) works per class.  Boxes of adjacent frames are
linked when their IoU is at least ``link_iou``.  Dynamic programming finds the
path with the largest sum of scores, every box on it is rescored, the boxes
that overlap the path's box in the same frame (IoU >= ``suppress_iou``) are
dropped, the path's boxes leave the pool, and the search repeats until no box
is left.  Seq-NMS+ (IFF-Net) first runs class-aware NMS on each frame and
rescores with ``0.5 * mean + 0.5 * max`` instead of the mean.

The search is exact and deterministic:

* ``a[j] = s_j + max(a[i] for linked, remaining i in the previous frame)``, or
  ``a[j] = s_j`` when no such ``i`` exists.  A box with a remaining linked
  predecessor always extends the best one: with the non-negative scores of
  :class:`~vidtag.types.Detections` this is the paper's optimum, and it makes
  zero-score predecessors part of the path rather than a tie.  Among equal
  predecessors the lowest box index wins.
* The path ends at the remaining box with the largest ``a``; ties go to the
  earliest frame, then the lowest box index.
* Classes are searched in increasing label order, each until it is empty, so
  track ids (from 1, in order of discovery) do not depend on timing.
* Every box ends on exactly one path unless it was suppressed (or removed by
  the per-frame NMS of Seq-NMS+); a path of one box is a track too.  Public
  ports that stop when the best path is a single box are wrong.

IoUs are computed in float64 from the float32 boxes, one pair at a time with a
fixed formula (:func:`_paired_iou`), so thresholds give the same answer as the
plain reference in :mod:`vidtag.seqnms_reference`.

Speed: adjacency and same-frame overlaps are computed once, vectorised.  The
DP values are kept between paths; after a path is removed only the boxes
whose chosen predecessor was removed or lost value are recomputed, in frame
order, and the change stops spreading where values stay the same.  A heap
keyed ``(label, -a, box)`` yields the next path.  See :func:`seq_nms_paths`.
"""

from __future__ import annotations

import heapq
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from vidtag.types import LINK_METHODS, Detections

METHODS = LINK_METHODS  # vidtag.types, the registry

_PAIR_CHUNK = 1 << 20  # candidate pairs per vectorised IoU batch (bounds memory)


class LinkedPath(NamedTuple):
    """One path found by Seq-NMS: a track.

    Attributes:
        label (int): class index shared by all its boxes.
        members (tuple[tuple[int, int], ...]): ``(frame, box index)`` pairs,
            one per frame, consecutive frames, increasing.  The box index
            refers to ``frames[frame]`` as passed in.
        total (float): sum of the members' scores (float64), as the DP found it.
        peak (float): largest member score.
    """

    label: int
    members: tuple[tuple[int, int], ...]
    total: float
    peak: float

    def rescored(self, method: str) -> float:
        """The score every member gets: mean ("seqnms") or 0.5 * mean + 0.5 * max ("seqnms+")."""
        mean = self.total / len(self.members)
        if method == "seqnms":
            return mean
        if method == "seqnms+":
            return 0.5 * mean + 0.5 * self.peak
        raise ValueError(f"rescoring is defined for 'seqnms' and 'seqnms+', not {method!r}")


def link(
    frames: Sequence[Detections],
    method: str = "seqnms+",
    *,
    link_iou: float = 0.5,
    suppress_iou: float = 0.3,
    nms_iou: float = 0.5,
    shot_starts: Sequence[int] = (),
) -> list[Detections]:
    """Link the detections of consecutive frames into tracks.

    Args:
        frames: one :class:`Detections` per frame, in order (boxes float32[N, 4]
            xyxy pixels, scores float32[N] in [0, 1], labels int64[N]).
            Frames may be empty.
        method: "seqnms+" (per-frame NMS, then Seq-NMS with
            ``0.5 * mean + 0.5 * max`` rescoring), "seqnms" (Seq-NMS with mean
            rescoring) or "none" (the input is returned as is).
        link_iou: boxes of the same class in adjacent frames are linked when
            their IoU is >= this (paper: 0.5).
        suppress_iou: a box of the path's class in a frame of the path is
            dropped when its IoU with the path's box is >= this (paper: 0.3).
        nms_iou: Seq-NMS+ only; per frame and class a box is dropped when its
            IoU with a kept, higher-scoring box is > this (the convention of
            :func:`vidtag.ops.boxes.nms`; equal scores rank by box index).
        shot_starts: frames that start a new shot (hard cuts, as a detector's
            ``shot_starts`` from :mod:`vidtag.shots`): no path crosses a cut, each
            shot is linked on its own.  Empty: one shot.

    Returns:
        One :class:`Detections` per input frame holding the boxes that lie on a
        path, in their input order, with ``track_ids`` (int64[K], from 1, one id
        per path, unique within a frame) and ``scores`` replaced by the path's
        rescored value.  Suppressed boxes are absent.  For "none" the input
        frames themselves (``track_ids`` untouched).
    """
    if method not in METHODS:
        raise ValueError(f"unknown linking method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "none":
        return list(frames)
    paths = seq_nms_paths(
        frames,
        link_iou=link_iou,
        suppress_iou=suppress_iou,
        nms_iou=nms_iou if method == "seqnms+" else None,
        shot_starts=shot_starts,
    )
    return paths_to_detections(frames, paths, method)


def paths_to_detections(frames: Sequence[Detections], paths: Sequence[LinkedPath], method: str) -> list[Detections]:
    """Keep the boxes on ``paths``, with track id ``1 + position in paths`` and rescored scores.

    Args:
        frames: the frames the paths index into.
        paths: from :func:`seq_nms_paths`; each box on at most one path.
        method: "seqnms" or "seqnms+", the rescoring rule.

    Returns:
        One Detections per frame: the boxes on a path, in input order.
    """
    track_ids = [np.zeros(len(f), np.int64) for f in frames]
    scores = [np.zeros(len(f), np.float32) for f in frames]
    for track_id, path in enumerate(paths, start=1):
        value = path.rescored(method)
        for t, j in path.members:
            track_ids[t][j] = track_id
            scores[t][j] = value
    out = []
    for f, ids, sc in zip(frames, track_ids, scores):
        keep = ids > 0
        out.append(f[keep].with_tracks(ids[keep], sc[keep]))
    return out


def seq_nms_paths(
    frames: Sequence[Detections],
    *,
    link_iou: float = 0.5,
    suppress_iou: float = 0.3,
    nms_iou: float | None = None,
    shot_starts: Sequence[int] = (),
) -> list[LinkedPath]:
    """All Seq-NMS paths, in order of discovery (shot by shot, classes in increasing label order).

    Args:
        frames: one Detections per frame (see :func:`link`).
        link_iou: IoU >= this links boxes of the same class in adjacent frames.
        suppress_iou: IoU >= this with a path's box drops a same-class box of
            that frame.
        nms_iou: when given, per-frame class-aware NMS (IoU > this) runs first
            and the boxes it removes are on no path.
        shot_starts: frames that start a new shot; each shot is searched on
            its own, so no path crosses a cut (out-of-range and repeated
            entries are ignored).

    Returns:
        list[LinkedPath]: every box not removed by NMS or suppression is on
        exactly one path.  Box indices refer to ``frames``.
    """
    bounds = sorted({int(t) for t in shot_starts if 0 < t < len(frames)})
    if bounds:
        paths: list[LinkedPath] = []
        for first, end in zip([0] + bounds, bounds + [len(frames)]):
            shot = seq_nms_paths(frames[first:end], link_iou=link_iou, suppress_iou=suppress_iou, nms_iou=nms_iou)
            paths.extend(p._replace(members=tuple((t + first, j) for t, j in p.members)) for p in shot)
        return paths
    graph = _BoxGraph(frames, link_iou, suppress_iou, nms_iou)
    alive = graph.nms_keep() if nms_iou is not None else [True] * graph.size
    return [graph.to_path(members) for members in graph.search(alive)]


def _box_area(boxes: np.ndarray) -> np.ndarray:
    """boxes (float64[N, 4]) xyxy -> float64[N] areas (0 for degenerate boxes)."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


def _paired_iou(columns: Sequence[np.ndarray], area: np.ndarray, i: np.ndarray, k: np.ndarray) -> np.ndarray:
    """IoU of the box pairs (i[p], k[p]).

    Args:
        columns: x1, y1, x2, y2 of all boxes, four float64[N].
        area (float64[N]): from :func:`_box_area`.
        i, k (int64[P]): box ids.

    Returns:
        float64[P]: IoU in [0, 1]; 0 where the union is empty.  The operations
        and their order are fixed (and mirrored by the test reference) so that
        results agree bit for bit.
    """
    x1, y1, x2, y2 = columns
    iw = np.maximum(np.minimum(x2[i], x2[k]) - np.maximum(x1[i], x1[k]), 0.0)
    ih = np.maximum(np.minimum(y2[i], y2[k]) - np.maximum(y1[i], y1[k]), 0.0)
    inter = iw * ih
    union = area[i] + area[k] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _group_pairs(
    a_start: np.ndarray, a_size: np.ndarray, b_start: np.ndarray, b_size: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (i, k) with i in group a[q] and k in group b[q], in chunks.

    Groups are ranges of box ids: ``a_start[q] + range(a_size[q])``.  Pairs
    come in order of q, then i, then k.
    """
    counts = a_size * b_size
    ends = np.cumsum(counts)
    q0 = 0
    while q0 < len(counts):
        base = ends[q0 - 1] if q0 else 0
        q1 = max(q0 + 1, int(np.searchsorted(ends, base + _PAIR_CHUNK, side="right")))
        c = counts[q0:q1]
        rep = np.repeat(np.arange(q0, q1), c)
        r = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        nb = b_size[rep]
        yield a_start[rep] + r // nb, b_start[rep] + r % nb
        q0 = q1


def _adjacency(src: np.ndarray, dst: np.ndarray, size: int) -> list[list[int]]:
    """For each id, the ``dst`` of the pairs whose ``src`` it is, ascending."""
    order = np.lexsort((dst, src))
    dst_sorted = dst[order].tolist()
    bounds = np.searchsorted(src[order], np.arange(size + 1)).tolist()
    empty: list[int] = []
    return [dst_sorted[lo:hi] if hi > lo else empty for lo, hi in zip(bounds[:-1], bounds[1:])]


class _BoxGraph:
    """All boxes of a video as ids sorted by (label, frame, box index), with their links.

    Sorting this way makes id order the DP's order within a class, the
    tie-break order (earliest frame, then lowest index) and the per-class
    discovery order at once.
    """

    def __init__(self, frames: Sequence[Detections], link_iou: float, suppress_iou: float, nms_iou: float | None):
        sizes = np.array([len(f) for f in frames], dtype=np.int64)
        n = int(sizes.sum())
        if n:
            boxes = np.concatenate([f.boxes for f in frames]).astype(np.float64)
            scores = np.concatenate([f.scores for f in frames]).astype(np.float64)
            labels = np.concatenate([f.labels for f in frames])
            if not np.isfinite(scores).all():
                raise ValueError("Seq-NMS needs finite scores; got NaN or inf")
        else:
            boxes, scores, labels = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
        frame = np.repeat(np.arange(len(frames)), sizes)
        index = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        order = np.lexsort((index, frame, labels))
        self.size = n
        self.boxes = boxes[order]
        self.frame = frame[order]
        self.index = index[order]
        self.labels = labels[order]
        self.scores = scores[order].tolist()
        self.label_list = self.labels.tolist()
        self.frame_list = self.frame.tolist()
        self.index_list = self.index.tolist()

        # Groups: runs of ids sharing (label, frame).
        new_group = np.ones(n, dtype=bool)
        if n:
            new_group[1:] = (self.labels[1:] != self.labels[:-1]) | (self.frame[1:] != self.frame[:-1])
        g_start = np.flatnonzero(new_group)
        g_size = np.diff(np.append(g_start, n))
        g_label, g_frame = self.labels[g_start], self.frame[g_start]

        same_src, same_dst, same_iou = self._pairs(g_start, g_size, g_start, g_size, exclude_self=True)
        sup = same_iou >= suppress_iou
        self.suppress = _adjacency(same_src[sup], same_dst[sup], n)
        if nms_iou is not None:
            over = same_iou > nms_iou
            self.nms_overlaps = _adjacency(same_src[over], same_dst[over], n)

        nxt = (g_label[1:] == g_label[:-1]) & (g_frame[1:] == g_frame[:-1] + 1)
        prev_src, next_dst, link_value = self._pairs(
            g_start[:-1][nxt], g_size[:-1][nxt], g_start[1:][nxt], g_size[1:][nxt], exclude_self=False
        )
        linked = link_value >= link_iou
        self.preds = _adjacency(next_dst[linked], prev_src[linked], n)
        self.succs = _adjacency(prev_src[linked], next_dst[linked], n)

    def _pairs(self, a_start, a_size, b_start, b_size, exclude_self):
        """(src, dst, iou) for all pairs between matching groups, float64 IoU."""
        columns = [np.ascontiguousarray(c) for c in self.boxes.T]
        area = _box_area(self.boxes)
        src, dst, iou = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        for i, k in _group_pairs(a_start, a_size, b_start, b_size):
            if exclude_self:
                keep = i != k
                i, k = i[keep], k[keep]
            src.append(i)
            dst.append(k)
            iou.append(_paired_iou(columns, area, i, k))
        return np.concatenate(src), np.concatenate(dst), np.concatenate(iou)

    def nms_keep(self) -> list[bool]:
        """Greedy per-frame, per-class NMS: ranks by score (desc), then id."""
        keep = [False] * self.size
        removed = [False] * self.size
        order = np.lexsort((np.arange(self.size), -np.asarray(self.scores))).tolist()
        overlaps = self.nms_overlaps
        for i in order:
            if removed[i]:
                continue
            keep[i] = True
            for k in overlaps[i]:
                removed[k] = True
        return keep

    def to_path(self, members: list[int]) -> LinkedPath:
        total = 0.0
        for m in members:  # same summation order as the DP: s_j + a[pred]
            total = self.scores[m] + total
        return LinkedPath(
            label=self.label_list[members[0]],
            members=tuple((self.frame_list[m], self.index_list[m]) for m in members),
            total=total,
            peak=max(self.scores[m] for m in members),
        )

    def search(self, alive: list[bool]) -> Iterator[list[int]]:
        """Yield paths (lists of ids, by frame) until no box is alive.

        ``alive`` is updated in place.  The DP values ``a`` and chosen
        predecessors ``pred`` stay valid between paths: removing boxes only
        lowers values, and a box's value or predecessor can change only if
        its chosen predecessor was removed or lost value (a lower-valued or
        higher-index predecessor losing value changes neither the max nor the
        first argmax).  So after each removal the boxes pointing at a changed
        box are recomputed, in id (= frame) order, and spreading stops where
        nothing changes.
        """
        scores, labels, preds, succs, suppress = self.scores, self.label_list, self.preds, self.succs, self.suppress
        n = self.size
        a = [0.0] * n
        pred = [-1] * n

        def recompute(k: int) -> bool:
            """Set a[k], pred[k] from the alive predecessors; True when a[k] changed."""
            best, choice = 0.0, -1
            for p in preds[k]:
                if alive[p] and (choice < 0 or a[p] > best):
                    best, choice = a[p], p
            value = scores[k] + best if choice >= 0 else scores[k]
            pred[k] = choice
            if value != a[k]:
                a[k] = value
                return True
            return False

        heap = []
        for k in range(n):
            if alive[k]:
                recompute(k)
                heap.append((labels[k], -a[k], k))
        heapq.heapify(heap)

        while heap:
            _, neg_value, k = heapq.heappop(heap)
            if not alive[k] or -neg_value != a[k]:
                continue  # stale entry
            members = [k]
            while pred[members[-1]] >= 0:
                members.append(pred[members[-1]])
            members.reverse()
            yield members

            dead = []
            for m in members:
                alive[m] = False
                dead.append(m)
            for m in members:
                for q in suppress[m]:
                    if alive[q]:
                        alive[q] = False
                        dead.append(q)

            dirty = [c for d in dead for c in succs[d] if alive[c] and pred[c] == d]
            heapq.heapify(dirty)
            last = -1
            while dirty:
                c = heapq.heappop(dirty)
                if c == last:
                    continue
                last = c
                if recompute(c):
                    heapq.heappush(heap, (labels[c], -a[c], c))
                    for child in succs[c]:
                        if alive[child] and pred[child] == c:
                            heapq.heappush(dirty, child)
