"""How AdaptCLIP fuses its branches into one map and one score (the reference's `average_mean`).

Zero-shot: map = mean of the branch maps, smoothed; score = mean(branch scores..., max of the
smoothed map). Few-shot: map = harmonic mean of [mean of the branch maps, alignment map], smoothed;
score = harmonic mean of [mean of the branch scores, max of the smoothed map].
The branches are whichever adapters exist (visual, textual and, few-shot, prompt-query): with a
subset of adapters the means run over the branches present and the rules stay the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from clipad.data.batch import AnomalyOutput

# Few-shot maps reach 4/3 when the alignment map is not clamped: the harmonic mean 2ab / (a + b) of a
# branch map a <= 1 and an alignment map b <= 2 (1 - cos) is at most 2 * 2 / 3. The reference keeps that range.
FEW_SHOT_UNCLAMPED_MAP_MAX = 4.0 / 3.0
EPS = 1e-12  # a zero among the values makes the harmonic mean (numerically) zero, as its limit


def harmonic_mean(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return values.clamp_min(EPS).reciprocal().mean(dim=dim).reciprocal()


def _image_max(maps: torch.Tensor) -> torch.Tensor:
    return maps.flatten(1).amax(dim=1)


def zero_shot_fusion(
    maps: list[torch.Tensor], scores: list[torch.Tensor], smooth: Callable[[torch.Tensor], torch.Tensor]
) -> AnomalyOutput:
    """maps: branch maps [B, H, W] in [0, 1]; scores: branch scores [B]."""
    if not maps:
        raise ValueError(
            "zero-shot fusion needs the visual or the textual adapter (adapter=pq needs shots >= 1)"
        )
    raw_map = torch.stack(maps).mean(dim=0)
    anomaly_map = smooth(raw_map)
    score = torch.stack([*scores, _image_max(anomaly_map)]).mean(dim=0)
    return AnomalyOutput(anomaly_map=anomaly_map, score=score, raw_map=raw_map)


def few_shot_fusion(
    maps: list[torch.Tensor],
    scores: list[torch.Tensor],
    alignment: torch.Tensor,
    smooth: Callable[[torch.Tensor], torch.Tensor],
) -> AnomalyOutput:
    """alignment: [B, H, W], the training-free harmonic mean of the layers' 1 - cos maps: in [0, 2] as the
    reference (then the map lies in [0, 4/3], the score in [0, 8/7]), in [0, 1] with the clamp option."""
    if not maps:
        raise ValueError("few-shot fusion needs at least one adapter branch")
    branch_map = torch.stack(maps).mean(dim=0)
    raw_map = harmonic_mean(torch.stack([branch_map, alignment]), dim=0)
    anomaly_map = smooth(raw_map)
    score = harmonic_mean(torch.stack([torch.stack(scores).mean(dim=0), _image_max(anomaly_map)]), dim=0)
    return AnomalyOutput(anomaly_map=anomaly_map, score=score, raw_map=raw_map)
