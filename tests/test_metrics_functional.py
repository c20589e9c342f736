"""clipad.metrics.functional against independent references: scikit-learn, literal AUPRO, hand-made cases."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from skimage import measure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from clipad.metrics import MissingMetricWarning, aupro, auroc, average_precision, max_f1


def sklearn_max_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    both = precision + recall
    return float(np.max(np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)))


def literal_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """The definition, threshold by threshold over every distinct value, region by region."""
    regions = []
    for index, mask in enumerate(masks):
        labels = measure.label(mask, connectivity=2)
        regions += [(index, labels == k) for k in range(1, labels.max() + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        above = maps >= threshold
        overlap = np.mean([above[index][region].sum() / region.sum() for index, region in regions])
        points.append(((above & normal).sum() / normal.sum(), overlap))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the segment at the limit
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def blob_maps(rng: np.random.Generator, n: int, size: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Random maps with a few rectangular and diagonal defects (one image without any); ties if ``levels``."""
    masks = np.zeros((n, size, size), dtype=bool)
    for index in range(1, n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 4, 2)
            masks[index, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
        diagonal = rng.integers(0, size - 3)
        masks[index, np.arange(diagonal, diagonal + 3), np.arange(diagonal, diagonal + 3)] = True
    maps = rng.random(masks.shape) + 0.6 * masks
    if levels:
        maps = np.floor(maps / maps.max() * (levels - 1))
    return maps, masks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [7, 200, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_metrics_match_sklearn_on_random_scores(seed, n, dtype):
    rng = np.random.default_rng(seed)
    scores = rng.random(n).astype(dtype)
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert max_f1(scores, labels) == pytest.approx(sklearn_max_f1(labels, scores), abs=1e-12)


@pytest.mark.parametrize("distinct", [1, 2, 3, 10])
def test_binary_metrics_match_sklearn_on_heavy_ties(distinct):
    rng = np.random.default_rng(distinct)
    scores = rng.integers(0, distinct, 3000).astype(np.float64)
    labels = rng.random(3000) < 0.2 + 0.1 * scores / distinct  # informative but tied
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert max_f1(scores, labels) == pytest.approx(sklearn_max_f1(labels, scores), abs=1e-12)


def test_hand_computed_cases():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert max_f1(scores, labels) == pytest.approx(0.8)  # threshold 0.35: P = 2/3, R = 1
    # a tie between a positive and a negative is one diagonal ROC step, one PR point
    tied = [0.5, 0.5, 0.2]
    assert auroc(tied, [1, 0, 0]) == pytest.approx(0.75)
    assert average_precision(tied, [1, 0, 0]) == pytest.approx(0.5)
    assert max_f1(tied, [1, 0, 0]) == pytest.approx(2 / 3)
    # all scores equal: chance AUROC, AP = prevalence, F1 of flagging everything
    assert auroc([3, 3, 3, 3], [1, 0, 0, 0]) == 0.5
    assert average_precision([3, 3, 3, 3], [1, 0, 0, 0]) == 0.25
    assert max_f1([3, 3, 3, 3], [1, 0, 0, 0]) == pytest.approx(0.4)


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(3)
    scores = rng.random((4, 50)).astype(np.float32)
    labels = rng.random((4, 50)) < 0.4
    for metric in (auroc, average_precision, max_f1):
        expected = metric(scores, labels)
        assert isinstance(expected, float)
        assert metric(torch.from_numpy(scores), torch.from_numpy(labels)) == expected
        assert metric(torch.from_numpy(scores), torch.from_numpy(labels).float()) == expected
        assert metric(scores.ravel().tolist(), labels.ravel().astype(int).tolist()) == expected
    maps, masks = blob_maps(rng, 3, 12, levels=None)
    expected = aupro(maps, masks)
    assert aupro(torch.from_numpy(maps), torch.from_numpy(masks).to(torch.uint8)) == expected
    half = torch.from_numpy(maps).half()  # widened exactly before sorting
    assert aupro(half, masks) == aupro(half.double().numpy(), masks)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], []])
def test_one_class_input_is_missing_with_a_warning(labels):
    scores = np.linspace(0, 1, len(labels))
    for metric in (auroc, average_precision, max_f1):
        with pytest.warns(MissingMetricWarning, match="missing"):
            assert math.isnan(metric(scores, labels))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="3 values but labels has 2"):
        average_precision([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="same shape"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.zeros((1, 4, 4)), np.ones((1, 4, 4), dtype=bool), fpr_limit=0)


@pytest.mark.parametrize("levels", [None, 2, 12])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_literal_definition(levels, fpr_limit):
    maps, masks = blob_maps(np.random.default_rng(levels or 0), 4, 16, levels)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(literal_aupro(maps, masks, fpr_limit), abs=1e-10)


def test_aupro_hand_computed():
    # two single-pixel regions; curve (0,0) -> (0,.5) -> (.5,.5) -> (.5,1) -> (1,1)
    maps, masks = np.array([[0.9, 0.8, 0.2, 0.1]]), np.array([[1, 0, 1, 0]])
    assert aupro(maps, masks) == pytest.approx(0.5)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.75)


def test_aupro_regions_are_8_connected_within_an_image_only():
    # diagonal neighbours form one 3-pixel region (4-connectivity would give two regions, overlap .5)
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    maps = np.where(mask, 0.2, 0.5)
    maps[0, 0] = 0.9
    # thresholds .9: overlap 1/3, FPR 0; .5: 1/3, 1; .2: 1, 1
    assert aupro(maps, mask) == pytest.approx(1 / 3)
    # touching pixels of two different images stay two regions (merged they would give 1/3)
    masks = np.zeros((2, 2, 2), dtype=bool)
    masks[0, 1, 0] = masks[1, 0, 0] = masks[1, 0, 1] = True
    maps = np.full((2, 2, 2), 0.5)
    maps[0, 1, 0], maps[1, 0, :] = 0.9, 0.1
    assert aupro(maps, masks) == pytest.approx(0.5)


def test_aupro_accepts_a_single_image_and_empty_masks():
    maps, masks = blob_maps(np.random.default_rng(5), 3, 10, levels=None)
    assert aupro(maps[1], masks[1]) == aupro(maps[1:2], masks[1:2])
    assert not masks[0].any()  # an image without defects only adds normal pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aupro(maps, masks)


def test_aupro_one_class_is_missing_with_a_warning():
    maps = np.random.default_rng(0).random((2, 5, 5))
    with pytest.warns(MissingMetricWarning, match="0 anomalous"):
        assert math.isnan(aupro(maps, np.zeros((2, 5, 5), dtype=bool)))
    with pytest.warns(MissingMetricWarning, match="0 normal"):
        assert math.isnan(aupro(maps, np.ones((2, 5, 5), dtype=bool)))
