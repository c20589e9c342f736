"""Scores of calibration images per (dataset, class): image scores and 16-bit level histograms of the maps.

Calibration runs in one process on batches from any source (a split of a dataset, a folder of good
parts, the k-shot normals); the maps are reduced at once to per-class histograms, so any number of
images fits in memory and the pixel thresholds are chosen on the levels evaluation compares against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from clipad.data.batch import Batch
from clipad.metrics.evaluator import MAP_LEVELS, quantize_maps


def _empty_hist() -> np.ndarray:
    return np.zeros(MAP_LEVELS, dtype=np.int64)


@dataclass
class GroupScores:
    """One class's calibration images: image scores, labels, and histograms of normal / anomalous pixels."""

    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    normal_pixels: np.ndarray = field(default_factory=_empty_hist)
    anomalous_pixels: np.ndarray = field(default_factory=_empty_hist)

    @property
    def normal_scores(self) -> np.ndarray:
        return np.array([s for s, y in zip(self.scores, self.labels) if y == 0], dtype=np.float64)

    def pooled_with(self, other: GroupScores) -> GroupScores:
        return GroupScores(self.scores + other.scores, self.labels + other.labels,
                           self.normal_pixels + other.normal_pixels, self.anomalous_pixels + other.anomalous_pixels)


def score_batches(module: torch.nn.Module, batches: Iterable[Batch], device: str | torch.device,
                  all_normal: bool) -> dict[tuple[str, str], GroupScores]:
    """Run ``module`` over ``batches`` and collect per (dataset, class).

    all_normal: the images are known good parts (every pixel normal, labels ignored); otherwise labels
    and masks (where ``has_mask``) of a labelled set are used.
    """
    groups: dict[tuple[str, str], GroupScores] = {}
    with torch.no_grad():
        for batch in batches:
            batch = move_data_to_device(batch, device)
            output = module(batch)
            # the units the metrics see (AnomalyModule.map_upper_bound), so a threshold means the same in both
            levels = quantize_maps(output.anomaly_map.float() / module.map_upper_bound)
            masks = (batch.mask[:, 0] > 0.5).cpu().numpy()
            has_mask = batch.has_mask.cpu().numpy()
            for i, key in enumerate(zip(batch.dataset, batch.cls_name)):
                group = groups.setdefault(key, GroupScores())
                group.scores.append(float(output.score[i]))
                group.labels.append(0 if all_normal else int(batch.label[i]))
                if all_normal:
                    group.normal_pixels += np.bincount(levels[i].ravel(), minlength=MAP_LEVELS)
                elif has_mask[i]:
                    anomalous = masks[i]
                    group.normal_pixels += np.bincount(levels[i][~anomalous], minlength=MAP_LEVELS)
                    group.anomalous_pixels += np.bincount(levels[i][anomalous], minlength=MAP_LEVELS)
    return groups
