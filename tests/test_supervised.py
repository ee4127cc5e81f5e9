"""Detection loss for labelled training: IoU / GIoU, ATSS assignment against a loop reference, GFL terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtag.models.nanodet import NanoDetOutput, cell_centers
from vidtag.train.supervised import atss_assign, detection_loss, paired_iou


def test_paired_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[1.0, 1, 3, 3], [2, 2, 3, 3]])
    iou, giou = paired_iou(a, b)
    # 1 / 7 overlap; hull 9: giou = 1/7 - (9 - 7) / 9.  Disjoint unit squares in a 3x3 hull: 0 - (9 - 2) / 9
    torch.testing.assert_close(iou, torch.tensor([1 / 7, 0.0]))
    torch.testing.assert_close(giou, torch.tensor([1 / 7 - 2 / 9, -7 / 9]))


def atss_reference(gt, centers, strides, level_sizes, topk=9):
    """ATSS in plain Python loops."""
    n = len(centers)
    best = [(-1.0, -1)] * n
    for j, g in enumerate(gt.tolist()):
        gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        cands, start = [], 0
        for size in level_sizes:
            cells = list(range(start, start + size))
            cells.sort(key=lambda i: ((centers[i, 0] - gcx) ** 2 + (centers[i, 1] - gcy) ** 2, i))
            cands += cells[: min(topk, size)]
            start += size
        ious = []
        for i in cands:
            cx, cy, s = float(centers[i, 0]), float(centers[i, 1]), float(strides[i]) * 2.5
            ax1, ay1, ax2, ay2 = cx - s, cy - s, cx + s, cy + s
            iw, ih = max(0.0, min(ax2, g[2]) - max(ax1, g[0])), max(0.0, min(ay2, g[3]) - max(ay1, g[1]))
            inter = iw * ih
            ious.append(inter / ((ax2 - ax1) * (ay2 - ay1) + (g[2] - g[0]) * (g[3] - g[1]) - inter))
        thr = float(np.mean(ious) + np.std(ious))
        for i, iou in zip(cands, ious):
            cx, cy = float(centers[i, 0]), float(centers[i, 1])
            if iou >= thr and g[0] < cx < g[2] and g[1] < cy < g[3] and iou > best[i][0]:
                best[i] = (iou, j)
    return torch.tensor([j for _, j in best])


@pytest.mark.parametrize("seed", range(5))
def test_atss_matches_the_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes, strides_ = ((8, 10), (4, 5), (2, 3)), (8, 16, 32)
    centers, strides = cell_centers(shapes, strides_)
    xy = torch.rand(4, 2, generator=gen) * torch.tensor([60.0, 44])
    wh = 6 + torch.rand(4, 2, generator=gen) * 40
    gt = torch.cat((xy, xy + wh), dim=1)
    sizes = [h * w for h, w in shapes]
    got = atss_assign(gt, centers, strides, sizes)
    want = atss_reference(gt, centers, strides, sizes)
    assert torch.equal(got, want)
    assert (got >= 0).any()
    assert torch.equal(atss_assign(gt[:0], centers, strides, sizes), torch.full((len(centers),), -1))


def _output(scores, dists, shapes=((4, 4),), strides=(8,)):
    return NanoDetOutput(scores, dists, shapes, strides)


def test_detection_loss_prefers_the_right_answer_and_has_gradients():
    shapes, strides = ((8, 8),), (8,)
    n, k, bins = 64, 3, 8
    gt = torch.tensor([[10.0, 10, 42, 50]])  # two positive cells
    labels = torch.tensor([1])
    centers, cell_strides = cell_centers(shapes, strides)
    assigned = atss_assign(gt, centers, cell_strides, [n])
    pos = assigned >= 0
    # a prediction that puts the right class on the positive cells with bins peaked on the true distances
    sides = torch.cat((centers - gt[0, :2], gt[0, 2:] - centers), dim=1) / 8
    sides = sides.clamp(0, bins - 1 - 0.01)
    left = sides.floor().long()
    probs = torch.full((n, 4, bins), 1e-6)
    probs.scatter_(2, left[..., None], (left + 1 - sides)[..., None])  # DFL's optimum: the two bins around the target
    probs.scatter_(2, (left + 1)[..., None], (sides - left)[..., None] + 1e-6)
    good_d = probs.log()[None]
    good_s = torch.full((1, n, k), 0.01)
    good_s[0, pos, 1] = 0.9
    bad_s = torch.full((1, n, k), 0.01)
    bad_s[0, pos, 2] = 0.9
    assert pos.sum() == 2
    good = detection_loss(_output(good_s, good_d.reshape(1, n, 4 * bins), shapes, strides), [(gt, labels)])
    bad = detection_loss(_output(bad_s, torch.zeros(1, n, 4 * bins), shapes, strides), [(gt, labels)])
    for part in ("cls", "box", "giou", "total"):
        assert good[part] < bad[part], part
    scores = bad_s.clone().requires_grad_()
    dists = torch.zeros(1, n, 4 * bins, requires_grad=True)
    detection_loss(_output(scores, dists, shapes, strides), [(gt, labels)])["total"].backward()
    assert scores.grad.abs().sum() > 0 and dists.grad[0, pos].abs().sum() > 0
    assert dists.grad[0, ~pos].abs().sum() == 0  # box terms only on positive cells
    empty = detection_loss(_output(scores, dists, shapes, strides), [None])
    assert float(empty["total"].detach()) == 0.0 and empty["total"].requires_grad
