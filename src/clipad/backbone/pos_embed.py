"""Resizing CLIP's learned positional embedding to another patch grid."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_positional_embedding(pos_embed: torch.Tensor, new_grid: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a [1 + g*g, C] positional embedding to [1 + h*w, C]; the CLS position is kept.

    Written out instead of open_clip's helper because open_clip resizes with antialias=True, which
    moves the embedding by up to 0.013 from what both reference implementations use (no antialias).
    `mode` is "bicubic" (AdaCLIP) or "bilinear" (AdaptCLIP).
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"backbone.pos_embed_interp must be 'bicubic' or 'bilinear', got {mode!r}")
    cls_pos, grid_pos = pos_embed[:1], pos_embed[1:]
    old_side = int(round(grid_pos.shape[0] ** 0.5))
    if old_side * old_side != grid_pos.shape[0]:
        raise ValueError(f"positional embedding of {grid_pos.shape[0]} patches is not a square grid")
    if (old_side, old_side) == tuple(new_grid):
        return pos_embed
    grid = grid_pos.reshape(1, old_side, old_side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode=mode, align_corners=False, antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, grid], dim=0)
