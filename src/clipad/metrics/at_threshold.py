"""Metrics of decisions taken at a threshold fixed in advance, and AdaptCLIP's Overkill@e.

A decision is "fail" (anomalous) when the score (or the map's 16-bit level) is >= the threshold. The rates
are fractions; a rate whose denominator is zero is NaN (e.g. precision when nothing was flagged).
"""

from __future__ import annotations

import math

import numpy as np

OVERKILL_ESCAPE_PERCENTS = (2, 5, 10)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def image_decision_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, false-reject (overkill) rate and escape (miss) rate at ``threshold``.

    scores float [N], labels {0, 1} [N]: false-reject = flagged normals / normals, escape = passed
    anomalous / anomalous.
    """
    fail = np.asarray(scores) >= threshold
    anomalous = np.asarray(labels) > 0
    tp = int(np.sum(fail & anomalous))
    fp = int(np.sum(fail & ~anomalous))
    fn = int(np.sum(~fail & anomalous))
    return {
        "image_precision": _ratio(tp, tp + fp),
        "image_recall": _ratio(tp, tp + fn),
        "image_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "image_false_reject": _ratio(fp, int(np.sum(~anomalous))),
        "image_escape": _ratio(fn, tp + fn),
    }


def pixel_decision_metrics(negatives: np.ndarray, positives: np.ndarray, level: int) -> dict[str, float]:
    """Pixel F1 and IoU (all pixels of the group pooled) at map level >= ``level``.

    negatives, positives: int64 histograms over the 16-bit levels of normal and anomalous pixels.
    """
    tp = int(positives[level:].sum())
    fp = int(negatives[level:].sum())
    fn = int(positives.sum()) - tp
    return {"pixel_f1": _ratio(2 * tp, 2 * tp + fp + fn), "pixel_iou": _ratio(tp, tp + fp + fn)}


def overkill_at_escape(scores: np.ndarray, labels: np.ndarray, escape_percent: float) -> float:
    """AdaptCLIP's I-Overkill@e: the share of normal images flagged at the threshold that lets e % escape.

    threshold = numpy's (linear) quantile of the anomalous scores at e/100; overkill = mean(normal >= it).
    """
    scores, anomalous = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0
    if not anomalous.any() or anomalous.all():
        return math.nan
    threshold = np.quantile(scores[anomalous], escape_percent / 100)
    return float(np.mean(scores[~anomalous] >= threshold))
