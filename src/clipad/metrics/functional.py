"""Exact image/pixel anomaly-detection metrics: AUROC, AP, max-F1 and AUPRO.

Hand-written rather than taken from torchmetrics: its exact (``thresholds=None``) metrics keep every
sample as a float score plus an int64 target (12 bytes a pixel, 5.6 GB for MVTec AD's test maps) and
sort them again for each metric, its binned versions are approximations, and it has no AUPRO at all.
Here each metric comes from one sort with cumulative sums (see ``curves``); ties are handled exactly as
scikit-learn does: every distinct score is one threshold, so a block of tied scores is one curve step.

All functions take numpy arrays or torch tensors (any device; computed on CPU), return a Python float,
and return NaN with a ``MissingMetricWarning`` when the input holds only one class.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from clipad.metrics.aupro import aupro_from_counts, label_regions, region_weights
from clipad.metrics.curves import (
    ThresholdCounts,
    auroc_from_counts,
    average_precision_from_counts,
    counts_from_scores,
    max_f1_from_counts,
)

ArrayLike = Tensor | np.ndarray


class MissingMetricWarning(UserWarning):
    """A metric is undefined (one-class input) and is reported as missing (NaN)."""


def _as_cpu_tensor(x: ArrayLike, name: str) -> Tensor:
    tensor = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if tensor.dtype.is_complex:
        raise ValueError(f"{name} must be real-valued, got {tensor.dtype}")
    return tensor


def _scores_tensor(x: ArrayLike, name: str) -> Tensor:
    scores = _as_cpu_tensor(x, name)
    if scores.dtype == torch.bool:
        scores = scores.to(torch.uint8)
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # exact widening: same order, same ties
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN; metrics need every sample scored")
    return scores


def _labels_tensor(x: ArrayLike, name: str) -> Tensor:
    labels = _as_cpu_tensor(x, name)
    if labels.dtype != torch.bool:
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError(f"{name} must be bool or hold only 0 and 1")
        labels = labels != 0
    return labels


def _binary_counts(scores: ArrayLike, labels: ArrayLike, metric: str) -> ThresholdCounts | None:
    score_t = _scores_tensor(scores, "scores")
    label_t = _labels_tensor(labels, "labels")
    if score_t.numel() != label_t.numel():
        raise ValueError(f"{metric}: scores has {score_t.numel()} values but labels has {label_t.numel()}")
    counts = counts_from_scores(score_t.reshape(-1), label_t.reshape(-1))
    if counts.n_positive == 0 or counts.n_negative == 0:
        warn_one_class(metric, counts.n_positive, counts.n_negative, stacklevel=4)
        return None
    return counts


def warn_one_class(what: str, n_positive: int, n_negative: int, unit: str = "samples", stacklevel: int = 2) -> None:
    """Warn that ``what`` is missing because its input has only one class (or none)."""
    found = f"{n_positive} anomalous and {n_negative} normal {unit}"
    warnings.warn(
        f"{what} is missing (NaN): it needs both normal and anomalous {unit}, found {found}",
        MissingMetricWarning,
        stacklevel=stacklevel + 1,
    )


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score``."""
    counts = _binary_counts(scores, labels, "AUROC")
    return math.nan if counts is None else auroc_from_counts(counts)


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision (step-wise area under the PR curve), as ``sklearn.metrics.average_precision_score``."""
    counts = _binary_counts(scores, labels, "AP")
    return math.nan if counts is None else average_precision_from_counts(counts)


def max_f1(scores: ArrayLike, labels: ArrayLike) -> float:
    """Largest F1 over all thresholds of ``sklearn.metrics.precision_recall_curve``.

    An oracle figure: the threshold is chosen with the test labels.
    """
    counts = _binary_counts(scores, labels, "max-F1")
    return math.nan if counts is None else max_f1_from_counts(counts)


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD definition).

    maps: float [N, H, W] (or [H, W]); masks: bool or {0, 1} of the same shape. Regions are the
    8-connected components of each image's mask; the FPR is over all pixels outside every region.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"aupro: fpr_limit must lie in (0, 1], got {fpr_limit}")
    map_t = _scores_tensor(maps, "maps")
    mask_t = _labels_tensor(masks, "masks")
    if map_t.shape != mask_t.shape or map_t.ndim not in (2, 3):
        raise ValueError(
            f"aupro: maps {tuple(map_t.shape)} and masks {tuple(mask_t.shape)} must both be [N, H, W] "
            "(or [H, W]) of the same shape; resize the maps to the mask size first"
        )
    if map_t.ndim == 2:
        map_t, mask_t = map_t.unsqueeze(0), mask_t.unsqueeze(0)
    labels, n_regions = label_regions(mask_t.numpy())
    labels = labels.ravel()
    weight = np.zeros(labels.size, dtype=np.int64)
    if n_regions:
        in_region = np.flatnonzero(labels)
        sizes = np.bincount(labels[in_region])
        weight[in_region] = region_weights(sizes[labels[in_region]], n_regions)
    counts = counts_from_scores(map_t.reshape(-1), mask_t.reshape(-1), torch.from_numpy(weight))
    if counts.n_positive == 0 or counts.n_negative == 0:
        warn_one_class("AUPRO", counts.n_positive, counts.n_negative, unit="pixels", stacklevel=3)
        return math.nan
    return aupro_from_counts(counts, fpr_limit)
