"""Cumulative counts at every distinct threshold, and the exact metrics read off them.

Every ranking metric here depends on the scores only through, for each distinct score taken as a
threshold from the highest down, how many positives and negatives score at least that much. Those
counts come from one sort (float scores, torch) or one histogram (scores stored as integer levels: a
counting sort); either way they are integers, so the result does not depend on the order in which
the samples arrived, which is what makes a DDP run reproduce a single-process run bit for bit.

The per-threshold arrays (at most one entry per distinct score) are handled in numpy: torch runs
ops of this size on two OpenMP threads, which on a busy machine (data-loader workers, other jobs)
was measured 40x slower than one thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ThresholdCounts:
    """Counts of samples scoring >= each distinct threshold, highest threshold first (int64 [T])."""

    tps: np.ndarray  # positives at or above the threshold
    fps: np.ndarray  # negatives at or above the threshold
    # AUPRO only: fixed-point sum of the region-overlap weights of the positives at or above it
    overlap: np.ndarray | None = None

    @property
    def n_positive(self) -> int:
        return int(self.tps[-1]) if len(self.tps) else 0

    @property
    def n_negative(self) -> int:
        return int(self.fps[-1]) if len(self.fps) else 0


def counts_from_scores(scores: Tensor, positive: Tensor, overlap_weight: Tensor | None = None) -> ThresholdCounts:
    """One sort of flat ``scores``; ``positive`` bool; ``overlap_weight`` int64 per sample (0 off regions)."""
    scores, order = torch.sort(scores, descending=True)
    if scores.numel() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ThresholdCounts(empty, empty, None if overlap_weight is None else empty)
    # the last sample of each run of equal scores closes that threshold
    last_of_threshold = torch.ones(scores.numel(), dtype=torch.bool)
    last_of_threshold[:-1] = scores[1:] != scores[:-1]
    ends = torch.nonzero(last_of_threshold).squeeze(1)
    tps = torch.cumsum(positive[order].to(torch.int64), 0)[ends]
    fps = ends + 1 - tps
    overlap = None if overlap_weight is None else torch.cumsum(overlap_weight[order], 0)[ends].numpy()
    return ThresholdCounts(tps.numpy(), fps.numpy(), overlap)


def counts_from_histograms(
    negatives: np.ndarray, positives: np.ndarray, overlap: np.ndarray | None = None
) -> ThresholdCounts:
    """Counting-sort variant: per-level histograms (int64 [L], level ascending = score ascending)."""
    negatives, positives = negatives[::-1], positives[::-1]
    present = (negatives + positives) > 0  # only levels some sample holds are thresholds
    tps = np.cumsum(positives)[present]
    fps = np.cumsum(negatives)[present]
    cum_overlap = None if overlap is None else np.cumsum(overlap[::-1])[present]
    return ThresholdCounts(tps, fps, cum_overlap)


def _rates(counts: ThresholdCounts) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with the curve's (0, 0) start prepended, float64."""
    fpr = np.concatenate([[0.0], counts.fps / counts.n_negative])
    tpr = np.concatenate([[0.0], counts.tps / counts.n_positive])
    return fpr, tpr


def auroc_from_counts(counts: ThresholdCounts) -> float:
    """Trapezoid under the ROC curve; a tie block is one diagonal segment, as in scikit-learn."""
    if counts.n_positive == 0 or counts.n_negative == 0:
        return math.nan
    fpr, tpr = _rates(counts)
    return float(np.trapezoid(tpr, fpr))


def average_precision_from_counts(counts: ThresholdCounts) -> float:
    """sum_k (R_k - R_{k-1}) P_k over distinct thresholds (scikit-learn's average_precision_score)."""
    if counts.n_positive == 0 or counts.n_negative == 0:
        return math.nan
    precision = counts.tps / (counts.tps + counts.fps)
    recall_step = np.diff(counts.tps, prepend=0) / counts.n_positive
    return float(np.sum(recall_step * precision))


def f1_curve(counts: ThresholdCounts) -> np.ndarray:
    """F1 = 2 TP / (TP + FP + P) at each distinct threshold, in the order of the counts."""
    return 2 * counts.tps / (counts.tps + counts.fps + counts.n_positive)


def max_f1_from_counts(counts: ThresholdCounts) -> float:
    """Best F1 over the distinct thresholds."""
    if counts.n_positive == 0 or counts.n_negative == 0:
        return math.nan
    return float(np.max(f1_curve(counts)))
