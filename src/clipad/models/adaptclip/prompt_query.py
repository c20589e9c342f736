"""AdaptCLIP's prompt-query adapter: align each query patch with its nearest normal-prompt patch.

The alignment itself (nearest neighbour and its 1 - cos distance) is training-free; the adapter
learns heads on the fused feature query + |query - aligned prompt|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clipad.models.adaptclip.fusion import harmonic_mean
from clipad.models.adaptclip.scoring import BranchOutput, tokens_to_grid, upsample

TOP_K = 10  # image head input: (mean + mean of the top 10 positions) / 2 per channel


@dataclass
class Alignment:
    nearest: list[torch.Tensor]  # per layer [B, N, D]: the nearest prompt patch of each query patch
    distance: list[torch.Tensor]  # per layer [B, N]: 1 - cos to it


@torch.no_grad()
def align_to_prompts(query: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest memory patch of every query patch by cosine.

    query [B, N, D] and memory [B or 1, M, D] hold unit vectors; memory is all k shots' patches pooled
    (one memory per query in training, one per class shared by the batch at test time).
    """
    similarity = query @ memory.transpose(1, 2)  # [B, N, M]
    best, index = similarity.max(dim=-1)
    memory = memory.expand(query.shape[0], -1, -1)
    nearest = torch.gather(memory, 1, index.unsqueeze(-1).expand(-1, -1, memory.shape[-1]))
    return nearest, 1.0 - best


def align_layers(queries: list[torch.Tensor], memories: list[torch.Tensor]) -> Alignment:
    pairs = [align_to_prompts(q, m) for q, m in zip(queries, memories, strict=True)]
    return Alignment(nearest=[p[0] for p in pairs], distance=[p[1] for p in pairs])


def alignment_map(
    alignment: Alignment, grid: tuple[int, int], size: tuple[int, int], clamp: bool = False
) -> torch.Tensor:
    """[B, H, W]: harmonic mean over layers of the upsampled 1 - cos maps.

    1 - cos lies in [0, 2] and is used as is, as the reference does (it exceeds 1 where a query
    patch's nearest normal-prompt patch has a negative cosine). clamp=True (model.clamp_align_distance)
    cuts it to [0, 1] first: a nearest normal patch at 90 degrees or more then counts as fully anomalous.
    """
    maps = [
        upsample(tokens_to_grid((d.clamp(0.0, 1.0) if clamp else d).unsqueeze(-1), grid), size)[:, 0]
        for d in alignment.distance
    ]
    return harmonic_mean(torch.stack(maps), dim=0)


class PromptQueryAdapter(nn.Module):
    """Per-layer BatchNorm2d, then one conv map head and one MLP image head shared by all layers.

    Sequential indices follow the reference (map head 0,1,3,4,5,7,8; image head 0,1,3,4,6) so
    imported checkpoints map key for key.
    """

    def __init__(self, dim: int, num_layers: int, context: bool = True) -> None:
        super().__init__()
        self.context = context  # fused = q + |q - p| (True, the reference scripts) or |q - p|
        self.layer_bn = nn.ModuleList(nn.BatchNorm2d(dim) for _ in range(num_layers))
        self.map_head = nn.Sequential(
            nn.Conv2d(dim, 128, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 128, kernel_size=2, stride=2),
            nn.Conv2d(128, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 64, kernel_size=2, stride=2),
            nn.Conv2d(64, 2, kernel_size=1),
        )
        self.score_head = nn.Sequential(
            nn.Linear(dim, 128, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 2, bias=False),
        )

    def forward(
        self, queries: list[torch.Tensor], alignment: Alignment, grid: tuple[int, int], size: tuple[int, int]
    ) -> list[BranchOutput]:
        """One output per feature layer. queries: per layer [B, N, D] unit patch tokens (CLS dropped)."""
        if len(queries) != len(self.layer_bn):
            raise ValueError(
                f"prompt-query adapter built for {len(self.layer_bn)} layers, got {len(queries)}"
            )
        outputs = []
        for bn, query, nearest in zip(self.layer_bn, queries, alignment.nearest, strict=True):
            residual = (query - nearest).abs()
            fused = query + residual if self.context else residual
            x = bn(tokens_to_grid(fused, grid))
            probs = upsample(self.map_head(x).softmax(dim=1), size)
            # Both heads read the batch-normed fused map (the reference's "sharebn").
            positions = x.flatten(2)
            top = positions.topk(min(TOP_K, positions.shape[-1]), dim=-1).values
            pooled = (positions.mean(dim=-1) + top.mean(dim=-1)) / 2
            outputs.append(BranchOutput(probs=probs, logits=self.score_head(pooled)))
        return outputs
