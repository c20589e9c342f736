"""Windows of s x s patches (stride 1), each encoded by CLIP's image tower as a token sequence of its own.

A window is a subset of the patch tokens, not a pixel crop: the sequence is the CLS token and the window's
patch tokens, each with its own position embedding, through ln_pre, every block, ln_post and the projection.
clipad's open_clip transformer is batch-first, so the sequences of all windows of all images are stacked
on the batch axis (anomalib transposes them to sequence-first, which mixes windows on open_clip >= 2.26.1).
"""
from __future__ import annotations

import torch

from clipad.backbone import ClipBackbone


def window_indices(grid: tuple[int, int], scale: int) -> torch.Tensor:
    """[n_windows, scale * scale]: the row-major patch indices of every window fully inside the grid,
    windows in row-major order of their top-left patch."""
    rows, cols = grid
    if not 1 <= scale <= min(rows, cols):
        raise ValueError(f"window scale {scale} does not fit the {rows}x{cols} patch grid (model.scales)")
    patch = torch.arange(rows * cols).reshape(rows, cols)
    windows = patch.unfold(0, scale, 1).unfold(1, scale, 1)  # [rows-s+1, cols-s+1, s, s]
    return windows.reshape(-1, scale * scale)


def run_blocks(backbone: ClipBackbone, sequences: torch.Tensor) -> torch.Tensor:
    """[S, L, width] (already through ln_pre), batch-first, through every block of the image tower."""
    x = sequences
    for block in backbone.clip.visual.transformer.resblocks:
        x = block(x)
    return x


def window_embeddings(
    backbone: ClipBackbone, tokens: torch.Tensor, indices: torch.Tensor, max_sequences: int
) -> torch.Tensor:
    """[B, n_windows, D]: the embedding of every window of every image, at most max_sequences per pass."""
    batch, n_windows = tokens.shape[0], indices.shape[0]
    patches = tokens[:, 1:][:, indices.to(tokens.device)]  # [B, n_windows, s*s, width]
    cls = tokens[:, :1].unsqueeze(1).expand(-1, n_windows, -1, -1)
    sequences = torch.cat([cls, patches], dim=2).flatten(0, 1)  # [B * n_windows, 1 + s*s, width]
    # A traced graph (ONNX export) runs all windows in one pass: split sizes traced for one batch size would
    # not fit another.
    chunks = [sequences] if torch.jit.is_tracing() else sequences.split(max_sequences)
    embedded = [backbone.project(run_blocks(backbone, chunk)[:, 0]) for chunk in chunks]
    return torch.cat(embedded).reshape(batch, n_windows, -1)


def harmonic_spread(window_scores: torch.Tensor, indices: torch.Tensor, num_patches: int) -> torch.Tensor:
    """[B, n_windows] -> [B, N]: per patch, the harmonic mean of the scores of the windows covering it.

    A score of 0 gives a harmonic mean of 0 on every patch it covers (1/0 = inf), its limit.
    """
    indices = indices.to(window_scores.device)
    flat = indices.reshape(-1)
    # scatter_add rather than bincount: the ONNX exporter has no bincount
    counts = window_scores.new_zeros(num_patches).scatter_add(0, flat, window_scores.new_ones(flat.shape))
    reciprocal = (1.0 / window_scores).unsqueeze(-1).expand(-1, -1, indices.shape[1]).flatten(1)
    sums = window_scores.new_zeros(window_scores.shape[0], num_patches)
    sums = sums.scatter_add(1, flat.unsqueeze(0).expand(window_scores.shape[0], -1), reciprocal)
    return counts / sums
