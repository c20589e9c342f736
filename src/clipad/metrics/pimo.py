"""AUPIMO: area under the per-image overlap (PIMO) curve, exact on the 16-bit map levels.

anomalib's definition (Bertoldo et al., 2024): for each anomalous image, its TPR (share of its anomalous
pixels at or above the threshold) is plotted against one FPR shared by the group, the share of the
normal images' pixels at or above the same threshold. The area is taken over FPR in [1e-5, 1e-4] with a
log-scaled FPR axis and divided by that log-range, so 1 is a perfect image; the table reports the mean
and std over the anomalous images.

The curve here is the polyline through one point per threshold level (ordered by decreasing level, so
FPR and TPR both grow), in (log FPR, TPR). Where even the lowest level with FPR = 0 lies above the lower
bound (few normal pixels, or many tied at the top), the curve starts there, flat at that level's TPR
(points with FPR = 0 have no log). anomalib instead evaluates 300,000 evenly spaced float thresholds and
snaps each bound to the nearest curve point, so its figures differ from these by that discretisation.

Inputs are a histogram of the normal images' pixels over the levels and each anomalous image's
anomalous-pixel levels: what AnomalyMetrics keeps anyway, so AUPIMO needs no pass over the maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FPR_BOUNDS = (1e-5, 1e-4)
_IMAGE_CHUNK = 64  # per-image TPRs are computed in chunks so memory stays bounded for any image count


def aupimo_per_image(
    normal_hist: np.ndarray, anomalous_levels: Sequence[np.ndarray], fpr_bounds: tuple[float, float] = FPR_BOUNDS
) -> np.ndarray:
    """AUPIMO of each anomalous image (float64 [I]); NaN for all when the group has no normal pixel.

    normal_hist: int64 [L] pixel counts of the normal images per level; anomalous_levels: per anomalous
    image the levels (ints < L) of its anomalous pixels, any order.
    """
    low, high = fpr_bounds
    if not 0 < low < high <= 1:
        raise ValueError(f"AUPIMO: fpr_bounds must satisfy 0 < low < high <= 1, got {fpr_bounds}")
    n_normal = int(normal_hist.sum())
    if n_normal == 0 or not len(anomalous_levels):
        return np.full(len(anomalous_levels), math.nan)
    # false positives at threshold level t (pixels >= t), for t = 0 .. L; t = L flags nothing
    false_positives = np.concatenate([np.cumsum(normal_hist[::-1])[::-1], [0]])
    first_zero = int(np.argmax(false_positives == 0))  # the lowest level with FPR = 0
    # curve points with FPR > 0, in the order of decreasing level (increasing FPR)
    levels = np.arange(first_zero - 1, -1, -1)
    log_fpr = np.log(false_positives[levels] / n_normal)
    log_low, log_high = math.log(low), math.log(high)
    # only the points bracketing [log_low, log_high] matter
    start = max(int(np.searchsorted(log_fpr, log_low, side="right")) - 1, 0)
    stop = min(int(np.searchsorted(log_fpr, log_high, side="left")), len(levels) - 1)
    levels, log_fpr = levels[start : stop + 1], log_fpr[start : stop + 1]

    areas = np.empty(len(anomalous_levels))
    thresholds = np.concatenate([[first_zero], levels])
    for chunk_start in range(0, len(anomalous_levels), _IMAGE_CHUNK):
        chunk = anomalous_levels[chunk_start : chunk_start + _IMAGE_CHUNK]
        tpr = np.stack([_share_at_or_above(np.sort(image), thresholds) for image in chunk])
        areas[chunk_start : chunk_start + len(chunk)] = _log_area(log_fpr, tpr[:, 1:], tpr[:, 0], log_low, log_high)
    return np.clip(areas / (log_high - log_low), 0.0, 1.0)


def _share_at_or_above(sorted_levels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of ``sorted_levels`` that are >= each threshold (float64)."""
    below = np.searchsorted(sorted_levels, thresholds, side="left")
    return (len(sorted_levels) - below) / len(sorted_levels)


def _log_area(x: np.ndarray, y: np.ndarray, y_before: np.ndarray, low: float, high: float) -> np.ndarray:
    """Area over [low, high] under polylines through (x[k], y[:, k]) (x non-decreasing), one per row.

    Left of x[0] each curve is flat at ``y_before``; x[-1] >= high always (FPR 1 at level 0).
    """
    area = y_before * max(min(x[0], high) - low, 0.0)
    if len(x) < 2:
        return area
    x0, x1 = x[:-1], x[1:]
    width = x1 - x0
    seg_low, seg_high = np.maximum(x0, low), np.minimum(x1, high)
    used = (seg_high > seg_low) & (width > 0)
    x0, width, seg_low, seg_high = x0[used], width[used], seg_low[used], seg_high[used]
    y0, y1 = y[:, :-1][:, used], y[:, 1:][:, used]
    slope = (y1 - y0) / width
    y_low = y0 + slope * (seg_low - x0)
    y_high = y0 + slope * (seg_high - x0)
    return area + np.sum((seg_high - seg_low) * (y_low + y_high) / 2, axis=1)


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof 1, as torch.std in anomalib) of per-image values, summed in sorted order.

    Sorting first makes the result independent of the order images arrived in (DDP = one process).
    """
    values = np.sort(values[~np.isnan(values)])
    if not len(values):
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((values - mean) ** 2) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std
