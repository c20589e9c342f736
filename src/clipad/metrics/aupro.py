"""AUPRO pieces: ground-truth regions, their per-pixel overlap weights, the integral up to an FPR limit.

MVTec AD's definition: at a threshold t the per-region overlap (PRO) is the mean over all ground-truth
connected regions r (8-connectivity, all images of the group) of |{p in r : s_p >= t}| / |r|. That mean
equals a sum over anomalous pixels of the weight 1 / (R |r(p)|), so the PRO curve is a cumulative sum
of per-pixel weights along the same sorted order as the ROC curve: no loop over thresholds or regions.
The weights are kept as fixed-point integers (scale 2**62) so that sums are exact and independent of
summation order; the relative rounding per region is below 1e-10 for any realistic region count.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from clipad.metrics.curves import ThresholdCounts

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
OVERLAP_SCALE = 2.0**62  # weights of one group sum to ~2**62 (< 2**63, int64 cannot overflow)


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions (8-connectivity) of bool masks [N, H, W], numbered 1..R across all images."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = EIGHT_CONNECTED  # connect pixels inside an image, never across images
    labels, n_regions = ndimage.label(masks, structure=structure)
    return labels, int(n_regions)


def region_weights(sizes: np.ndarray, n_regions: int) -> np.ndarray:
    """Fixed-point weight 2**62 / (R |r|) of one pixel of a region of size |r| among R regions (int64)."""
    return np.round(OVERLAP_SCALE / (n_regions * sizes.astype(np.float64))).astype(np.int64)


def aupro_from_counts(counts: ThresholdCounts, fpr_limit: float) -> float:
    """Exact trapezoid of mean PRO over FPR up to ``fpr_limit`` (interpolated there), divided by it."""
    if counts.overlap is None:
        raise ValueError("aupro_from_counts needs counts with region overlap weights")
    total_overlap = int(counts.overlap[-1]) if len(counts.overlap) else 0
    if counts.n_negative == 0 or total_overlap == 0:
        return math.nan
    fpr = np.concatenate([[0.0], counts.fps / counts.n_negative])
    pro = np.concatenate([[0.0], counts.overlap / total_overlap])
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    area = float(np.trapezoid(pro[:inside], fpr[:inside]))
    last = inside - 1
    if inside < len(fpr) and fpr[last] < fpr_limit:  # close the area at the limit on the next segment
        pro_at_limit = pro[last] + (pro[inside] - pro[last]) * (fpr_limit - fpr[last]) / (fpr[inside] - fpr[last])
        area += (fpr_limit - fpr[last]) * (pro[last] + pro_at_limit) / 2
    return area / fpr_limit
