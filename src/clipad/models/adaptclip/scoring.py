"""Two-class (normal, anomalous) outputs of an AdaptCLIP branch: pixel probabilities and image logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BranchOutput:
    probs: torch.Tensor  # [B, 2, H, W] softmax over (normal, anomalous) at input resolution
    logits: torch.Tensor  # [B, 2] image-level logits

    @property
    def anomaly_map(self) -> torch.Tensor:
        return self.probs[:, 1]

    @property
    def score(self) -> torch.Tensor:
        return self.logits.softmax(dim=-1)[:, 1]


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, H, W], bilinear with align_corners=False as the reference.

    Made contiguous first: on a channels-last input (the view tokens_to_grid gives) torch's CPU kernel for
    these few-channel maps was 4x slower at batch 8, and so was every operation on its output."""
    return F.interpolate(maps.contiguous(), size=size, mode="bilinear", align_corners=False)


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, N, C] patch tokens (row-major) -> [B, C, rows, cols] (a channels-last view: the convolutions of the
    prompt-query adapter are faster on it)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def score_against_text(
    global_embedding: torch.Tensor,
    patches: torch.Tensor,
    text: torch.Tensor,
    temperature: float,
    grid: tuple[int, int],
    size: tuple[int, int],
) -> BranchOutput:
    """Cosine to the (normal, anomalous) text embeddings / temperature; softmax, then upsample the patch grid.

    global_embedding [B, D], patches [B, N, D] (CLS dropped), text [2, D] unit vectors.
    """
    image_logits = F.normalize(global_embedding, dim=-1) @ text.t() / temperature
    patch_logits = F.normalize(patches, dim=-1) @ text.t() / temperature
    probs = tokens_to_grid(patch_logits.softmax(dim=-1), grid)
    return BranchOutput(probs=upsample(probs, size), logits=image_logits)
