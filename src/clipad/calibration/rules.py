"""Calibration rules: a threshold from scores whose test labels are not used.

* ``normal_quantile``: normal samples only. The threshold is the smallest observed value (or, if none
  will do, just above the largest) that flags at most floor((1 - q) * n) of the n normals, so q=0.99
  means at most 1 % false rejects on them, ties included.
* ``val_f1``: a labelled validation set. The threshold of the best F1 over its distinct values (the
  highest such value when several reach it), used as is on the test set.
* ``fixed``: the user's number (no function needed).

Image scores are float64 values; pixel thresholds are chosen on 16-bit map levels (histograms, see
clipad.metrics.evaluator) and returned as map values level / 65535, which evaluation maps back to the
same level. A decision is fail when value >= threshold.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from clipad.metrics.curves import counts_from_histograms, counts_from_scores, f1_curve

_SLACK = 1e-9  # (1 - q) * n is computed in floats: 0.01 * 300 must count as 3, not 2.9999999999999996


def allowed_false_rejects(n: int, q: float) -> int:
    if not 0 < q <= 1:
        raise ValueError(f"q={q}: the normal quantile must lie in (0, 1], e.g. q=0.99")
    return int(math.floor((1 - q) * n + _SLACK))


def _lowest_within(values: np.ndarray, at_or_above: np.ndarray, allowed: int) -> int | None:
    """Index of the lowest of ``values`` (ascending) whose at-or-above count is <= allowed, or None."""
    fits = np.flatnonzero(at_or_above <= allowed)
    return int(fits[0]) if len(fits) else None


def normal_quantile_threshold(normal_scores: np.ndarray, q: float) -> float:
    """Image threshold flagging at most floor((1 - q) n) of ``normal_scores``."""
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if not len(scores):
        raise ValueError("normal_quantile needs at least one normal score")
    values = np.unique(scores)
    at_or_above = len(scores) - np.searchsorted(scores, values, side="left")
    index = _lowest_within(values, at_or_above, allowed_false_rejects(len(scores), q))
    return float(values[index]) if index is not None else float(np.nextafter(scores[-1], np.inf))


def normal_quantile_level(normal_hist: np.ndarray, q: float) -> int:
    """Pixel threshold level flagging at most floor((1 - q) N) of the N normal pixels in ``normal_hist``."""
    n = int(normal_hist.sum())
    if n == 0:
        raise ValueError("normal_quantile needs at least one normal pixel")
    values = np.flatnonzero(normal_hist)
    at_or_above = np.cumsum(normal_hist[::-1])[::-1][values]
    index = _lowest_within(values, at_or_above, allowed_false_rejects(n, q))
    return int(values[index]) if index is not None else int(values[-1]) + 1


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold of the best F1 on a labelled set (both classes needed)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels) > 0
    if positive.all() or not positive.any():
        raise ValueError("val_f1 needs normal and anomalous validation images")
    counts = counts_from_scores(torch.from_numpy(scores), torch.from_numpy(positive))
    values = np.unique(scores)[::-1]  # the order of counts: distinct values, highest first
    return float(values[int(np.argmax(f1_curve(counts)))])


def f1_max_level(negatives: np.ndarray, positives: np.ndarray) -> int:
    """The map level of the best pixel F1 from histograms of normal and anomalous pixels."""
    if not negatives.any() or not positives.any():
        raise ValueError("val_f1 needs normal and anomalous validation pixels")
    counts = counts_from_histograms(negatives, positives)
    levels = np.flatnonzero((negatives + positives) > 0)[::-1]
    return int(levels[int(np.argmax(f1_curve(counts)))])
