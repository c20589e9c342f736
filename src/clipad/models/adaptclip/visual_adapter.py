"""AdaptCLIP's visual adapter: residual MLPs on the global embedding and on the last layer's tokens."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN_REDUCTION = 4  # 768 -> 192 on ViT-L-14-336


class ResidualMLP(nn.Module):
    """x + f(x) with f = Linear(no bias) -> BatchNorm1d -> ReLU -> Linear(no bias).

    `fc` keeps the reference's layer indices (0 linear, 1 batch norm, 3 linear) so that imported
    checkpoints map key for key.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim]; every leading position is one sample of the batch norm."""
        return x + self.fc(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class VisualAdapter(nn.Module):
    """Adapts the image side against fixed hand-made text embeddings (the text tower stays as CLIP made it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.global_adapter = ResidualMLP(dim, dim // HIDDEN_REDUCTION)
        self.local_adapter = ResidualMLP(dim, dim // HIDDEN_REDUCTION)

    def forward(
        self, global_embedding: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """global_embedding [B, D]; tokens [B, 1 + N, D] (CLS included in the batch-norm pass, as the reference)."""
        return self.global_adapter(global_embedding), self.local_adapter(tokens)
