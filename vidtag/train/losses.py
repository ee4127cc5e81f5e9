"""Distillation losses: a student's head outputs and features against a frozen teacher's.

The teacher is NanoDet-g on the clean frame; the student is the PSLA detector on
the degraded frame.  Three terms, each a mean over frames:

* class scores: a quality-focal-style BCE between the sigmoid scores,
  ``BCE(s, t) * |s - t| ** beta`` (GFL's QFL with the teacher's score as the
  soft target), summed over cells and classes and divided by the number of
  cells where the teacher is confident (``max_c t >= pos_threshold``, at least
  1).  The modulating factor silences the ~80 x cells of easy background, as
  focal loss does; a background cell the student wrongly lights up still pays.
* box distributions: KL(teacher || student) between the softmaxes over the
  ``reg_max + 1`` bins of each side, mean over the 4 sides, averaged over the
  teacher-confident cells weighted by the teacher's top score.  Zero (with a
  graph) when the teacher sees nothing.
* features: MSE between the student's features (what goes into the 1x1
  predictor) and the teacher's, divided by the teacher's mean square (so the
  three pyramid levels weigh the same whatever their scale), mean over levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtag.models.nanodet import NanoDetOutput


@dataclass(frozen=True)
class LossWeights:
    """Weights and thresholds of the distillation loss (see the module doc).

    The weights keep the class scores, which the benchmark scores, the
    largest term; training logs each part unweighted (``vidtag train``
    prints them with its progress), which is how to check that on new footage.
    """

    cls: float = 1.0  # quality-focal class-score term
    box: float = 0.25  # GFL's DFL weight (0.25, nanodet-g.yml loss_dfl) for the bin KL
    feature: float = 0.5  # normalised feature MSE on the features fed to the predictor
    transform: float = 0.25  # same on Transform(Fl) alone: a direct signal for the Transform Net
    beta: float = 2.0  # QFL modulating exponent (GFL paper, beta = 2)
    pos_threshold: float = 0.3  # teacher score that makes a cell "confident" (box KL, normaliser)


def quality_focal_terms(scores: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """Per-element quality focal loss (GFL): ``BCE(s, t) * |s - t| ** beta``.

    scores (Tensor[..., K]) sigmoid scores with gradients; targets (same shape)
    soft targets in [0, 1], not differentiated -> Tensor[..., K].
    """
    s = scores.clamp(1e-6, 1 - 1e-6)
    t = targets.detach()
    return F.binary_cross_entropy(s, t, reduction="none") * (s - t).abs().pow(beta)


def score_distillation_loss(student: Tensor, teacher: Tensor, beta: float = 2.0, pos_threshold: float = 0.3) -> Tensor:
    """Quality-focal BCE between sigmoid scores.

    Args:
        student (Tensor[B, N, K]): student scores in (0, 1), with gradients.
        teacher (Tensor[B, N, K]): teacher scores in [0, 1] (soft targets).
        beta: modulating exponent on ``|s - t|``.
        pos_threshold: a cell counts towards the normaliser when ``max_k t >= pos_threshold``.

    Returns:
        Tensor[]: sum over cells and classes / max(confident cells, 1), mean over B.
    """
    loss = quality_focal_terms(student, teacher, beta)
    confident = (teacher.detach().amax(dim=-1) >= pos_threshold).sum(dim=-1).clamp(min=1)
    return (loss.sum(dim=(1, 2)) / confident).mean()


def box_distillation_loss(student: Tensor, teacher: Tensor, teacher_scores: Tensor, pos_threshold: float = 0.3) -> Tensor:
    """KL(teacher || student) of the per-side bin distributions on teacher-confident cells.

    Args:
        student (Tensor[B, N, 4 * R]): student box logits (R bins a side).
        teacher (Tensor[B, N, 4 * R]): teacher box logits.
        teacher_scores (Tensor[B, N, K]): teacher class scores; the weight of a
            cell is ``max_k`` of them where it is ``>= pos_threshold``, else 0.

    Returns:
        Tensor[]: weighted mean over cells (and frames) of the KL averaged over
        the 4 sides; 0 when no cell is confident.
    """
    b, n, d = student.shape
    log_s = F.log_softmax(student.reshape(b, n, 4, d // 4), dim=-1)
    log_t = F.log_softmax(teacher.detach().reshape(b, n, 4, d // 4), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean(dim=-1)  # [B, N]
    top = teacher_scores.detach().amax(dim=-1)
    weight = torch.where(top >= pos_threshold, top, torch.zeros_like(top))
    return (kl * weight).sum() / weight.sum().clamp(min=1e-6)


def feature_distillation_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Normalised MSE, mean over levels.

    Args:
        student (list[Tensor[B, C, h, w]]): one map per pyramid level.
        teacher (list[Tensor[B, C, h, w]]): the same shapes.

    Returns:
        Tensor[]: ``mean_levels( mean((s - t)^2) / mean(t^2) )``.
    """
    terms = []
    for s, t in zip(student, teacher, strict=True):
        t = t.detach()
        terms.append(F.mse_loss(s, t) / t.pow(2).mean().clamp(min=1e-12))
    return torch.stack(terms).mean()


def transformation_residual_loss(warped: list[Tensor], current: list[Tensor]) -> Tensor:
    """IFF-Net's TRL without its lambda: ``mean smoothL1(warp(F_j) - F_i)`` over
    positions and channels (beta 1), mean over pyramid levels.

    Args:
        warped (list[Tensor[N, C, h, w]]): neighbours warped onto the current frame, per level.
        current (list[Tensor[1 or N, C, h, w]]): the current frame's features (targets, not differentiated).
    """
    terms = [F.smooth_l1_loss(w, c.detach().expand_as(w)) for w, c in zip(warped, current, strict=True)]
    return torch.stack(terms).mean()


def distillation_loss(
    student: NanoDetOutput,
    teacher: NanoDetOutput,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    weights: LossWeights = LossWeights(),
    transformed: list[Tensor] | None = None,
    transformed_teacher: list[Tensor] | None = None,
) -> dict[str, Tensor]:
    """All terms for a batch of frames, weighted and summed.

    Args:
        student, teacher: head outputs for the same B frames.
        student_features, teacher_features: per level Tensor[B, C, h, w].
        weights: term weights and thresholds.
        transformed, transformed_teacher: optional ``Transform(Fl)`` per level
            and the teacher features of those frames (the ``transform`` term).

    Returns:
        dict: ``"cls"``, ``"box"``, ``"feature"``, ``"transform"`` (unweighted
        terms, Tensor[]) and ``"total"`` (the weighted sum, with gradients).
    """
    parts = {
        "cls": score_distillation_loss(student.cls_scores, teacher.cls_scores, weights.beta, weights.pos_threshold),
        "box": box_distillation_loss(student.box_dists, teacher.box_dists, teacher.cls_scores, weights.pos_threshold),
        "feature": feature_distillation_loss(student_features, teacher_features),
    }
    if transformed:
        parts["transform"] = feature_distillation_loss(transformed, transformed_teacher)
    else:
        parts["transform"] = parts["feature"].new_zeros(())
    parts["total"] = (
        weights.cls * parts["cls"]
        + weights.box * parts["box"]
        + weights.feature * parts["feature"]
        + weights.transform * parts["transform"]
    )
    return parts
