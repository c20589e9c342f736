"""Scoring images for the page through predict's own pipeline, so a score equals `python -m clipad.predict`'s.

The same reader (ImageFileDataset: read_rgb, the model's resize and normalisation), the same batch (batch_of)
and the same forward: only the batch layout can differ, which moves a float32 score by ~1e-7 at most.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipad.app.models import AppModel
from clipad.cli.inference import batch_of
from clipad.cli.predict_inputs import ImageFileDataset, collate_images
from clipad.cli.predict_outputs import resized_map


@dataclass
class ScoredImage:
    name: str  # as shown and written to the CSV: an upload's file name, or a server path
    score: float
    preview: np.ndarray  # [h, w, 3] uint8, the image as predict's figures show it
    anomaly_map: np.ndarray  # [h, w] float32, the smoothed map at the preview's size


@dataclass
class ScoringResult:
    images: list[ScoredImage]
    unreadable: list[tuple[str, str]]  # (name, reason)


def score_images(model: AppModel, paths: list[Path], names: list[str], class_name: str,
                 batch_size: int) -> ScoringResult:
    """Scores and maps of `paths` (names: how each is shown) in batches of `batch_size`."""
    dataset = ImageFileDataset(paths, model.transform, previews=True)
    name_of = {str(path): name for path, name in zip(paths, names)}
    scored: list[ScoredImage] = []
    unreadable: list[tuple[str, str]] = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            loaded = collate_images([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            unreadable += [(name_of[path], reason) for path, reason in loaded.unreadable]
            if loaded.images is None:
                continue
            output = model.module(batch_of(loaded, class_name, model.device))
            for i, path in enumerate(loaded.paths):
                preview = loaded.previews[i]
                scored.append(ScoredImage(name_of[path], float(output.score[i]), preview,
                                          resized_map(output.anomaly_map[i], preview.shape[:2])))
    return ScoringResult(scored, unreadable)
