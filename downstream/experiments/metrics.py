"""Scores of the downstream comparison: ROC AUC and mean IoU."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["binary_auc", "mean_iou"]


def binary_auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1} (Mann-Whitney U with
    average ranks for ties). NaN when one class is absent."""
    scores = scores.to(torch.float64).flatten()
    labels = labels.flatten().to(torch.bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks within runs of equal scores
    uniq, inverse = torch.unique(sorted_scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    )
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.ones(scores.numel(), dtype=torch.float64)
    )
    ranks[order] = (sums / counts)[inverse]
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def mean_iou(pred: Tensor, target: Tensor, n_classes: int) -> float:
    """Mean intersection-over-union of integer maps ``pred`` and ``target`` (same shape) over
    the classes present in either; NaN when no pixel exists."""
    pred, target = pred.flatten().long(), target.flatten().long()
    inter = torch.bincount(target[pred == target], minlength=n_classes).double()
    union = (
        torch.bincount(pred, minlength=n_classes) + torch.bincount(target, minlength=n_classes)
    ).double() - inter
    present = union > 0
    if not bool(present.any()):
        return math.nan
    return float((inter[present] / union[present]).mean())
