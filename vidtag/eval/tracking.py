"""Multi-object tracking metrics: CLEAR MOT (MOTA, MOTP), identity (IDF1), HOTA.

Class-agnostic: a predicted box may match a ground-truth box of any class
(the caller chooses which classes take part; :func:`vidtag.eval.report.evaluate`
keeps the ground-truth classes some prediction class maps to and the
predictions of mapped classes).  Only predicted boxes with a track id (>= 0)
count; ground-truth boxes marked ``ignore`` are left out.  Track ids are per
video; counts are summed over videos.

Definitions (from the papers, not from any implementation):

* CLEAR MOT (Bernardin & Stiefelhagen 2008).  Frame by frame, a ground-truth
  object stays matched to the prediction it was matched to in the previous
  frame while their IoU reaches the threshold; the remaining pairs are
  assigned by the Hungarian algorithm on IoU, pairs below the threshold
  excluded.  An identity switch is counted when a ground-truth object is
  matched to a prediction id other than the one it was last matched to.
  ``MOTA = 1 - (FN + FP + IDSW) / num_gt``, ``MOTP`` = mean IoU of matches.
* IDF1 (Ristani et al. 2016).  One global one-to-one assignment of
  ground-truth tracks to predicted tracks maximising IDTP, the number of
  frames in which the paired boxes overlap with IoU >= threshold.
  ``IDF1 = 2 IDTP / (num_gt + num_pred)``, ``IDP = IDTP / num_pred``,
  ``IDR = IDTP / num_gt``.
* HOTA (Luiten et al. 2021), averaged over alpha = 0.05, 0.10, ..., 0.95.
  Each frame is matched once by the Hungarian algorithm on
  ``IoU * A_global(gt id, pred id)``, where ``A_global`` is the pairs'
  track-level alignment from IoU normalised by the competing boxes of the
  frame; a match counts as a TP at alpha when its IoU >= alpha.
  ``DetA = TP / (TP + FN + FP)``; ``AssA`` = mean over TPs of
  ``|TPA| / (|TPA| + |FNA| + |FPA|)`` for the TP's pair of ids;
  ``HOTA = sqrt(DetA * AssA)``; ``LocA`` = mean IoU of TPs.

The Hungarian algorithm is scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidtag.eval.groundtruth import FrameBoxes, VideoBoxes
from vidtag.eval.vid import box_iou

HOTA_ALPHAS = np.arange(1, 20) * 0.05
"""Localisation thresholds of HOTA: 0.05 .. 0.95."""

_EPS = np.finfo(np.float64).eps
_CONTINUITY_BONUS = 1000.0


def _linear_sum_assignment(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment maximising the sum of ``score`` (float[R, C])."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("tracking metrics need scipy: pip install scipy") from err
    return linear_sum_assignment(score, maximize=True)


@dataclass(frozen=True)
class TrackFrame:
    """One frame of a sequence, ids made dense.

    Attributes:
        gt_ids (int64[G]): ground-truth track index (0 .. num gt tracks - 1).
        pred_ids (int64[P]): predicted track index (0 .. num pred tracks - 1).
        iou (float64[G, P]): IoU of the boxes.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    iou: np.ndarray


@dataclass(frozen=True)
class Sequence:
    """A video as the tracking metrics see it."""

    frames: list[TrackFrame]
    num_gt_ids: int
    num_pred_ids: int


def _dense(ids: np.ndarray, table: dict[int, int]) -> np.ndarray:
    return np.array([table.setdefault(int(i), len(table)) for i in ids], dtype=np.int64)


def build_sequence(gt: VideoBoxes, pred: VideoBoxes | None, gt_classes=None, pred_classes=None) -> Sequence:
    """Pair the frames of one video.

    Args:
        gt: ground truth; every frame in ``gt.frames`` is scored, and boxes
            without a track id get one of their own.
        pred: predictions (frames outside ``gt.frames`` are not scored);
            boxes with ``track_ids < 0`` are left out.  None: no predictions.
        gt_classes, pred_classes: keep only boxes of these classes (None: all).

    Returns:
        Sequence with dense ids.
    """
    gt_table: dict[int, int] = {}
    pred_table: dict[int, int] = {}
    frames = []
    empty = FrameBoxes.empty(with_scores=True)
    untracked = 0
    for frame_id, g in gt.frames.items():
        keep = ~g.ignore
        if gt_classes is not None:
            keep &= np.isin(g.classes, list(gt_classes))
        g = g[keep]
        raw_ids = g.track_ids.copy()
        for i in np.nonzero(raw_ids < 0)[0]:
            untracked += 1
            raw_ids[i] = -untracked - 1  # a fresh id, never equal to a real one
        p = empty if pred is None else pred.frames.get(frame_id, empty)
        keep = p.track_ids >= 0
        if pred_classes is not None:
            keep &= np.isin(p.classes, list(pred_classes))
        p = p[keep]
        frames.append(TrackFrame(_dense(raw_ids, gt_table), _dense(p.track_ids, pred_table), box_iou(g.boxes, p.boxes)))
    return Sequence(frames, len(gt_table), len(pred_table))


def clear_counts(seq: Sequence, iou_threshold: float = 0.5) -> dict[str, float]:
    """CLEAR MOT counts of one sequence: num_gt, num_pred, tp, fp, fn, idsw, iou_sum."""
    prev_pair: dict[int, int] = {}  # gt id -> pred id matched in the previous frame
    last_pair: dict[int, int] = {}  # gt id -> pred id it was last matched to
    c = dict(num_gt=0, num_pred=0, tp=0, fp=0, fn=0, idsw=0, iou_sum=0.0)
    for f in seq.frames:
        G, P = len(f.gt_ids), len(f.pred_ids)
        c["num_gt"] += G
        c["num_pred"] += P
        matches: dict[int, int] = {}
        if G and P:
            score = f.iou.copy()
            prev = np.array([prev_pair.get(int(g), -1) for g in f.gt_ids], dtype=np.int64)
            score[prev[:, None] == f.pred_ids[None, :]] += _CONTINUITY_BONUS
            score[f.iou < iou_threshold - _EPS] = 0.0
            rows, cols = _linear_sum_assignment(score)
            ok = score[rows, cols] > 0
            for r, col in zip(rows[ok], cols[ok]):
                g, p = int(f.gt_ids[r]), int(f.pred_ids[col])
                matches[g] = p
                c["iou_sum"] += float(f.iou[r, col])
                if g in last_pair and last_pair[g] != p:
                    c["idsw"] += 1
                last_pair[g] = p
        c["tp"] += len(matches)
        c["fn"] += G - len(matches)
        c["fp"] += P - len(matches)
        prev_pair = matches
    return c


def identity_counts(seq: Sequence, iou_threshold: float = 0.5) -> dict[str, float]:
    """IDF1 counts of one sequence: num_gt, num_pred, idtp."""
    overlap = np.zeros((seq.num_gt_ids, seq.num_pred_ids))
    num_gt = num_pred = 0
    for f in seq.frames:
        num_gt += len(f.gt_ids)
        num_pred += len(f.pred_ids)
        r, col = np.nonzero(f.iou >= iou_threshold - _EPS)
        np.add.at(overlap, (f.gt_ids[r], f.pred_ids[col]), 1)
    idtp = 0
    if overlap.size:
        rows, cols = _linear_sum_assignment(overlap)
        idtp = int(overlap[rows, cols].sum())
    return dict(num_gt=num_gt, num_pred=num_pred, idtp=idtp)


def hota_counts(seq: Sequence) -> dict[str, np.ndarray]:
    """HOTA counts of one sequence, one value per alpha in :data:`HOTA_ALPHAS`.

    Returns:
        ``tp``, ``fn``, ``fp``, ``loc_sum`` (sum of IoU over TPs) and
        ``ass_sum`` (sum over TPs of their id pair's association IoU), each
        float64[A].
    """
    A = len(HOTA_ALPHAS)
    gt_len = np.zeros(seq.num_gt_ids)
    pred_len = np.zeros(seq.num_pred_ids)
    align = np.zeros((seq.num_gt_ids, seq.num_pred_ids))
    for f in seq.frames:
        np.add.at(gt_len, f.gt_ids, 1)
        np.add.at(pred_len, f.pred_ids, 1)
        if f.iou.size:
            # Normalise each IoU by the competing boxes of its row and column,
            # so a pair's alignment is not inflated by crowded frames.
            denom = f.iou.sum(0)[None, :] + f.iou.sum(1)[:, None] - f.iou
            norm = np.divide(f.iou, denom, out=np.zeros_like(f.iou), where=denom > _EPS)
            align[np.ix_(f.gt_ids, f.pred_ids)] += norm
    global_align = np.divide(align, gt_len[:, None] + pred_len[None, :] - align, out=np.zeros_like(align), where=align > 0)
    pair_tp = np.zeros((A, seq.num_gt_ids, seq.num_pred_ids))
    out = {k: np.zeros(A) for k in ("tp", "fn", "fp", "loc_sum", "ass_sum")}
    for f in seq.frames:
        G, P = len(f.gt_ids), len(f.pred_ids)
        if G == 0 or P == 0:
            out["fn"] += G
            out["fp"] += P
            continue
        score = global_align[np.ix_(f.gt_ids, f.pred_ids)] * f.iou
        rows, cols = _linear_sum_assignment(score)
        sims = f.iou[rows, cols]
        for a, alpha in enumerate(HOTA_ALPHAS):
            ok = sims >= alpha - _EPS
            n = int(ok.sum())
            out["tp"][a] += n
            out["fn"][a] += G - n
            out["fp"][a] += P - n
            out["loc_sum"][a] += sims[ok].sum()
            pair_tp[a, f.gt_ids[rows[ok]], f.pred_ids[cols[ok]]] += 1
    for a in range(A):
        union = gt_len[:, None] + pred_len[None, :] - pair_tp[a]
        ass_iou = np.divide(pair_tp[a], union, out=np.zeros_like(union), where=union > 0)
        out["ass_sum"][a] = float((pair_tp[a] * ass_iou).sum())
    return out


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def tracking_metrics(sequences: list[Sequence], iou_threshold: float = 0.5) -> dict:
    """MOTA, MOTP, IDF1, IDP, IDR, HOTA, DetA, AssA, LocA and counts over sequences.

    Args:
        sequences: one per video (see :func:`build_sequence`).
        iou_threshold: matching IoU for CLEAR MOT and IDF1 (0.5).

    Returns:
        JSON-ready dict; ratios in [0, 1] (MOTA may be negative), None when
        undefined (no ground truth, or no match for MOTP / LocA).
    """
    clear = {k: 0.0 for k in ("num_gt", "num_pred", "tp", "fp", "fn", "idsw", "iou_sum")}
    ident = {k: 0 for k in ("num_gt", "num_pred", "idtp")}
    hota = {k: np.zeros(len(HOTA_ALPHAS)) for k in ("tp", "fn", "fp", "loc_sum", "ass_sum")}
    gt_tracks = pred_tracks = 0
    for seq in sequences:
        for k, v in clear_counts(seq, iou_threshold).items():
            clear[k] += v
        for k, v in identity_counts(seq, iou_threshold).items():
            ident[k] += v
        for k, v in hota_counts(seq).items():
            hota[k] += v
        gt_tracks += seq.num_gt_ids
        pred_tracks += seq.num_pred_ids
    num_gt, num_pred = int(clear["num_gt"]), int(clear["num_pred"])
    det_a = np.divide(hota["tp"], hota["tp"] + hota["fn"] + hota["fp"], out=np.zeros(len(HOTA_ALPHAS)), where=(hota["tp"] + hota["fn"] + hota["fp"]) > 0)
    ass_a = np.divide(hota["ass_sum"], hota["tp"], out=np.zeros(len(HOTA_ALPHAS)), where=hota["tp"] > 0)
    loc_a = np.divide(hota["loc_sum"], hota["tp"], out=np.zeros(len(HOTA_ALPHAS)), where=hota["tp"] > 0)
    undefined = num_gt == 0
    return {
        "MOTA": None if undefined else 1.0 - (clear["fn"] + clear["fp"] + clear["idsw"]) / num_gt,
        "MOTP": _ratio(clear["iou_sum"], clear["tp"]),
        "IDF1": _ratio(2 * ident["idtp"], ident["num_gt"] + ident["num_pred"]),
        "IDP": _ratio(ident["idtp"], ident["num_pred"]),
        "IDR": _ratio(ident["idtp"], ident["num_gt"]),
        "HOTA": None if undefined else float(np.sqrt(det_a * ass_a).mean()),
        "DetA": None if undefined else float(det_a.mean()),
        "AssA": None if undefined else float(ass_a.mean()),
        "LocA": float(loc_a[hota["tp"] > 0].mean()) if (hota["tp"] > 0).any() else None,
        "IDSW": int(clear["idsw"]),
        "FP": int(clear["fp"]),
        "FN": int(clear["fn"]),
        "TP": int(clear["tp"]),
        "IDTP": int(ident["idtp"]),
        "num_gt": num_gt,
        "num_pred": num_pred,
        "gt_tracks": gt_tracks,
        "pred_tracks": pred_tracks,
        "iou_threshold": float(iou_threshold),
    }


def evaluate_tracking(
    gt_videos: dict[str, VideoBoxes],
    pred_videos: dict[str, VideoBoxes],
    pairs: dict[str, str],
    gt_classes=None,
    pred_classes=None,
    iou_threshold: float = 0.5,
) -> dict:
    """Class-agnostic tracking metrics of the paired videos; see :func:`tracking_metrics`."""
    seqs = [build_sequence(gt_videos[g], pred_videos.get(p), gt_classes, pred_classes) for g, p in pairs.items()]
    return tracking_metrics(seqs, iou_threshold)
