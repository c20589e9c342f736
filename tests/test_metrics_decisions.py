"""Metrics at a fixed threshold, Overkill@e and AUPIMO: hand-made cases and a literal slow AUPIMO."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from clipad.metrics import AnomalyMetrics, MissingMetricWarning
from clipad.metrics.at_threshold import image_decision_metrics, overkill_at_escape, pixel_decision_metrics
from clipad.metrics.evaluator import MAP_LEVELS
from clipad.metrics.pimo import aupimo_per_image, mean_and_std


def test_image_decisions_count_flagged_and_passed_images():
    scores = np.array([0.1, 0.5, 0.7, 0.9, 0.3])
    labels = np.array([0, 0, 1, 1, 1])
    # fail at >= 0.5: TP = {0.7, 0.9}, FP = {0.5}, FN = {0.3}
    got = image_decision_metrics(scores, labels, 0.5)
    assert got == pytest.approx({
        "image_precision": 2 / 3, "image_recall": 2 / 3, "image_f1": 4 / 6,
        "image_false_reject": 1 / 2, "image_escape": 1 / 3,
    })
    nothing_flagged = image_decision_metrics(scores, labels, 2.0)
    assert math.isnan(nothing_flagged["image_precision"]) and nothing_flagged["image_escape"] == 1.0


def test_pixel_f1_and_iou_pool_the_histograms_at_the_level():
    negatives = np.array([5, 3, 2, 0])
    positives = np.array([0, 1, 2, 3])
    # level >= 2: TP = 5, FP = 2, FN = 1
    assert pixel_decision_metrics(negatives, positives, 2) == pytest.approx({"pixel_f1": 10 / 13, "pixel_iou": 5 / 8})


def test_overkill_follows_the_reference_definition():
    anomalous = [0.2, 0.4, 0.6, 0.8, 1.0]
    normal = [0.1, 0.3, 0.5, 0.25]
    scores = np.array(anomalous + normal)
    labels = np.array([1] * 5 + [0] * 4)
    # numpy's linear quantile of the anomalous scores: e=2 -> 0.216, e=5 -> 0.24, e=10 -> 0.28
    assert overkill_at_escape(scores, labels, 2) == pytest.approx(3 / 4)
    assert overkill_at_escape(scores, labels, 5) == pytest.approx(3 / 4)
    assert overkill_at_escape(scores, labels, 10) == pytest.approx(2 / 4)
    assert math.isnan(overkill_at_escape(scores[:5], labels[:5], 5))


def hist(counts: dict[int, int]) -> np.ndarray:
    out = np.zeros(MAP_LEVELS, dtype=np.int64)
    for level, count in counts.items():
        out[level] = count
    return out


@pytest.mark.parametrize(
    ("normal", "anomalous", "expected"),
    [
        # every anomalous pixel above every normal one: TPR 1 from FPR 0 on
        ({10: 100_000}, [20, 30], 1.0),
        # every anomalous pixel below every normal one: TPR 0 until FPR 1
        ({10: 100_000}, [5, 5], 0.0),
        # FPR jumps from 0 to exactly 1e-4 at level 1000 while TPR stays 1/2: flat at 1/2 over the range
        ({1000: 10, 500: 99_990}, [2000, 0], 0.5),
        # the same, but TPR jumps to 1 where FPR reaches 1e-4: the range still sees only the flat 1/2
        ({1000: 10, 0: 99_990}, [2000, 1000], 0.5),
        # FPR 1e-5 at level 900, 1e-4 at level 800; TPR steps 0 -> 1/2 at level 850 (FPR still 1e-5)
        ({900: 1, 800: 9, 0: 99_990}, [850, 100], 0.5),
        # from (1e-5, 0) to (1e-3, 1) linearly in log FPR: 0.5 at 1e-4, so the mean over the range is 1/4
        ({900: 1, 800: 99, 0: 99_900}, [800], 0.25),
    ],
)
def test_aupimo_known_answers(normal, anomalous, expected):
    got = aupimo_per_image(hist(normal), [np.array(anomalous)])
    assert got[0] == pytest.approx(expected, abs=1e-12)


def literal_aupimo(maps: np.ndarray, masks: np.ndarray, low: float = 1e-5, high: float = 1e-4) -> list[float]:
    """The definition, threshold by threshold, on float maps: no histograms, no vectorised curve."""
    normal_pixels = np.concatenate([m.ravel() for m, k in zip(maps, masks) if not k.any()])
    thresholds = sorted(set(maps.ravel().tolist()) | {math.inf}, reverse=True)
    log_low, log_high = math.log(low), math.log(high)
    result = []
    for image, mask in zip(maps, masks):
        if not mask.any():
            continue
        positives = image[mask]
        points = [(float(np.mean(normal_pixels >= t)), float(np.mean(positives >= t))) for t in thresholds]
        tpr_at_zero_fpr = max(tpr for fpr, tpr in points if fpr == 0)
        curve = [(math.log(fpr), tpr) for fpr, tpr in points if fpr > 0]
        area = tpr_at_zero_fpr * max(min(curve[0][0], log_high) - log_low, 0.0)
        for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
            start, end = max(x0, log_low), min(x1, log_high)
            if end <= start:
                continue
            y_start = y0 + (y1 - y0) * (start - x0) / (x1 - x0)
            y_end = y0 + (y1 - y0) * (end - x0) / (x1 - x0)
            area += (end - start) * (y_start + y_end) / 2
        result.append(min(max(area / (log_high - log_low), 0.0), 1.0))
    return result


def random_case(seed: int, size: int, n_normal: int, n_anomalous: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps on exact 16-bit levels (so quantising changes nothing), many ties, a few hot normal pixels."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    levels = rng.integers(0, 200, (n, size, size)) * 100  # coarse: ties everywhere
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n_normal, n):
        y, x = rng.integers(0, size - 12, 2)
        masks[i, y : y + rng.integers(3, 12), x : x + rng.integers(3, 12)] = True
        levels[i][masks[i]] = rng.integers(150, 655, int(masks[i].sum())) * 100
    hot = rng.integers(0, size, (n_normal * 8, 2))
    for k, (y, x) in enumerate(hot):
        levels[k % n_normal, y, x] = rng.integers(190, 655) * 100
    return levels / (MAP_LEVELS - 1), masks


@pytest.mark.parametrize(("seed", "size", "n_normal"), [(0, 160, 4), (1, 200, 3), (2, 48, 2)])
def test_aupimo_matches_literal_definition_through_the_evaluator(seed, size, n_normal):
    # size 48 with 2 normal images: FPR 1e-4 is never reached below the first positive FPR (the flat start)
    maps, masks = random_case(seed, size, n_normal, n_anomalous=4)
    metrics = AnomalyMetrics({"d": "industrial"})
    scores = torch.from_numpy(maps.reshape(len(maps), -1).max(1))
    labels = torch.from_numpy(masks.reshape(len(masks), -1).any(1)).long()
    for part in (slice(0, 3), slice(3, None)):  # two batches: the normal histogram accumulates
        metrics.update(scores[part], labels[part], torch.from_numpy(maps[part]).float(),
                       torch.from_numpy(masks[part]), torch.ones(len(maps[part]), dtype=torch.bool),
                       ["d"] * len(maps[part]), ["c"] * len(maps[part]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetricWarning)
        row = metrics.compute().sections["inspection"].class_rows()[0]
    expected = literal_aupimo(maps, masks)
    mean, std = np.mean(expected), np.std(expected, ddof=1)
    # float64 logs and divisions in a different order: equal to ~1e-15, not bit for bit
    assert row["pixel_aupimo"] == pytest.approx(mean, abs=1e-10)
    assert row["pixel_aupimo_std"] == pytest.approx(std, abs=1e-10)
    assert 0 < mean < 1  # the case exercises the curve, not just an end


def test_aupimo_needs_normal_images_and_mean_std_ignore_order():
    assert np.isnan(aupimo_per_image(np.zeros(MAP_LEVELS, dtype=np.int64), [np.array([3])])).all()
    values = np.array([0.3, 0.1, 0.7, np.nan])
    assert mean_and_std(values) == mean_and_std(values[::-1])
    assert mean_and_std(values)[0] == pytest.approx(11 / 30)
