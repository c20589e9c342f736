"""WinCLIP's scores: text-based (zero-shot) and nearest-normal-memory based (few-shot, WinCLIP+) 15x15 maps."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipad.models.winclip.features import WinCLIPFeatures
from clipad.models.winclip.windows import harmonic_spread


def text_anomaly_score(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, n, D] against [B | 1, 2, D] (normal, anomalous) -> [B, n]: softmax(cos / T)[anomalous]."""
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).transpose(-1, -2)
    return (cosine / temperature).softmax(dim=-1)[..., 1]


def harmonic_mean_of_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    return len(maps) / sum(1.0 / m for m in maps)


def zero_shot_scores(
    features: WinCLIPFeatures, text: torch.Tensor, indices: dict[int, torch.Tensor], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image score [B] and patch map [B, N]: the harmonic mean of the image-scale map (the image score on
    every patch) and each window scale's map (window scores spread by harmonic mean over covering windows)."""
    image_score = text_anomaly_score(features.image.unsqueeze(1), text, temperature)[:, 0]
    num_patches = features.patches.shape[1]
    maps = [image_score.unsqueeze(1).expand(-1, num_patches)]
    for scale, windows in features.windows.items():
        maps.append(harmonic_spread(text_anomaly_score(windows, text, temperature), indices[scale], num_patches))
    return image_score, harmonic_mean_of_maps(maps)


@dataclass
class NormalMemory:
    """A class's k normal reference images, every position and shot pooled, unit vectors."""

    windows: dict[int, torch.Tensor]  # scale -> [k * n_windows, D]
    patches: torch.Tensor  # [k * N, width]

    @classmethod
    def from_features(cls, features: WinCLIPFeatures) -> NormalMemory:
        return cls(
            windows={s: F.normalize(w.flatten(0, 1), dim=-1) for s, w in features.windows.items()},
            patches=F.normalize(features.patches.flatten(0, 1), dim=-1),
        )


def nearest_normal_distance(queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """[B, n, C] against unit [M, C] -> [B, n]: min over the memory of (1 - cos) / 2, in [0, 1]."""
    cosine = F.normalize(queries, dim=-1) @ memory.T
    return ((1.0 - cosine.amax(dim=-1)) / 2).clamp(0.0, 1.0)  # clamp: cos may round past +-1


def few_shot_map(features: WinCLIPFeatures, memory: NormalMemory, indices: dict[int, torch.Tensor]) -> torch.Tensor:
    """[B, N]: the arithmetic mean of the patch-level map and each window scale's spread map."""
    num_patches = features.patches.shape[1]
    maps = [nearest_normal_distance(features.patches, memory.patches)]
    for scale, windows in features.windows.items():
        distance = nearest_normal_distance(windows, memory.windows[scale])
        maps.append(harmonic_spread(distance, indices[scale], num_patches))
    return torch.stack(maps).mean(dim=0)
