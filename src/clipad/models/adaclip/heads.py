"""Projections of CLIP's image tokens into the joint embedding space (AdaCLIP's trainable heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchProjections(nn.Module):
    """One Linear(width -> embed_dim) per feature layer on the raw residual patch tokens (no ln_post/proj)."""

    def __init__(
        self, layers: int, width: int, embed_dim: int, device: str | torch.device | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, embed_dim, device=device) for _ in range(layers))

    def forward(self, patch_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """[B, N, width] per layer -> L2-normalised [B, N, embed_dim] per layer."""
        return [
            F.normalize(layer(tokens), dim=-1)
            for layer, tokens in zip(self.layers, patch_tokens, strict=True)
        ]


class ClsProjection(nn.Module):
    """Linear(embed_dim -> embed_dim) on the prompted pass's pooled embedding ln_post(CLS) @ proj."""

    def __init__(self, embed_dim: int, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(embed_dim, embed_dim, device=device)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(pooled), dim=-1)
