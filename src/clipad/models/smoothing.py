"""Gaussian smoothing of anomaly maps exactly as scipy.ndimage.gaussian_filter does it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TRUNCATE = 4.0  # scipy's default: the kernel reaches 4 sigma


def gaussian_kernel_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth [B, H, W] maps with a separable gaussian, batched on the maps' device.

    Matches scipy's gaussian_filter(mode="reflect"): edges are padded symmetrically (the edge pixel
    repeated), which is torch's "replicate"/"reflect" neither — so the padding is built by flipping.
    Both reference implementations smooth with scipy; torch's "reflect" differs by up to 7e-3 at borders.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma, maps.dtype, maps.device)
    radius = kernel.numel() // 2
    x = maps.unsqueeze(1)
    for dim in (2, 3):
        x = _symmetric_pad(x, radius, dim)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        x = F.conv2d(x, weight)
    return x.squeeze(1)


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Pad by mirroring including the edge sample (scipy "reflect": d c b a | a b c d | d c b a)."""
    size = x.shape[dim]
    if radius > size:  # the mirror repeats itself: tile the image mirrored until it is wide enough
        reps = -(-radius // size) + 1
        mirrored = torch.cat([x, x.flip(dim)] * reps, dim=dim)
        left = mirrored.narrow(dim, 0, radius).flip(dim)
        right = torch.cat([x.flip(dim), x] * reps, dim=dim).narrow(dim, 0, radius)
        return torch.cat([left, x, right], dim=dim)
    left = x.narrow(dim, 0, radius).flip(dim)
    right = x.narrow(dim, size - radius, radius).flip(dim)
    return torch.cat([left, x, right], dim=dim)
