"""From calibration scores to thresholds per class (plus the global fallback), and the bootstrap spread."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from clipad.calibration.rules import (
    f1_max_level,
    f1_max_threshold,
    normal_quantile_level,
    normal_quantile_threshold,
)
from clipad.calibration.scoring import GroupScores
from clipad.calibration.thresholds import ClassThreshold
from clipad.errors import ClipadError
from clipad.metrics.evaluator import level_to_threshold

GroupKey = tuple[str, str]  # (dataset, class)


def _normal_quantile(group: GroupScores, q: float) -> ClassThreshold:
    normals = group.normal_scores
    pixel = level_to_threshold(normal_quantile_level(group.normal_pixels, q)) if group.normal_pixels.any() else None
    return ClassThreshold(normal_quantile_threshold(normals, q), pixel, len(normals))


def _val_f1(group: GroupScores) -> ClassThreshold | None:
    """None when the class lacks normal or anomalous images (it then uses the global threshold)."""
    labels = np.array(group.labels)
    if labels.all() or not labels.any():
        return None
    pixel = None
    if group.normal_pixels.any() and group.anomalous_pixels.any():
        pixel = level_to_threshold(f1_max_level(group.normal_pixels, group.anomalous_pixels))
    return ClassThreshold(f1_max_threshold(np.array(group.scores), labels), pixel, len(labels))


def calibrate_groups(
    groups: Mapping[GroupKey, GroupScores], rule: str, q: float | None = None
) -> tuple[dict[str, dict[str, ClassThreshold]], ClassThreshold]:
    """Per-class thresholds and the global ones (all classes pooled) by ``normal_quantile`` or ``val_f1``."""
    if not groups:
        raise ClipadError("calibration found no images: check data=..., source=... or normals_dir=...")
    pooled = functools.reduce(GroupScores.pooled_with, groups.values())
    if rule == "normal_quantile":
        if q is None:
            raise ClipadError("rule=normal_quantile needs q=... (e.g. q=0.99: at most 1 % false rejects)")
        pick = functools.partial(_normal_quantile, q=float(q))
    elif rule == "val_f1":
        pick = _val_f1
    else:
        raise ClipadError(f"rule={rule}: calibrate_groups handles normal_quantile and val_f1 (fixed needs no scores)")
    classes: dict[str, dict[str, ClassThreshold]] = {}
    for (dataset, cls_name), group in groups.items():
        chosen = pick(group)
        if chosen is not None:
            classes.setdefault(dataset, {})[cls_name] = chosen
    fallback = pick(pooled)
    if fallback is None:
        raise ClipadError("rule=val_f1 needs normal and anomalous images in the validation set (data.val=...)")
    return classes, fallback


@dataclass(frozen=True)
class BootstrapSpread:
    """False-reject rate on the left-out normals over bootstrap draws: mean and std (ddof 1), as fractions."""

    draws: int
    overall: tuple[float, float]
    per_class: dict[GroupKey, tuple[float, float]]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std


def bootstrap_false_rejects(
    normal_scores: Mapping[GroupKey, np.ndarray], q: float, draws: int = 100, seed: int = 0
) -> BootstrapSpread:
    """How noisy a normal_quantile threshold from these n normals is.

    Each draw resamples every class's normals with replacement (n of n), calibrates on the resample and
    counts the false rejects among that class's normals left out of it. ``overall`` pools the classes
    of a draw (flagged / left out); both are then summarised over the draws.
    """
    if draws < 2:
        raise ClipadError(f"bootstrap_draws={draws}: needs at least 2 draws for a spread (0 turns it off)")
    rng = np.random.default_rng(seed)
    overall: list[float] = []
    per_class: dict[GroupKey, list[float]] = {key: [] for key in normal_scores}
    for _ in range(draws):
        flagged = left_out = 0
        for key, scores in normal_scores.items():
            drawn = rng.integers(0, len(scores), len(scores))
            out = np.ones(len(scores), dtype=bool)
            out[drawn] = False
            if not out.any():
                continue
            threshold = normal_quantile_threshold(scores[drawn], q)
            rejects = int(np.sum(scores[out] >= threshold))
            per_class[key].append(rejects / int(out.sum()))
            flagged, left_out = flagged + rejects, left_out + int(out.sum())
        if left_out:
            overall.append(flagged / left_out)
    return BootstrapSpread(draws, _mean_std(overall), {k: _mean_std(v) for k, v in per_class.items()})
