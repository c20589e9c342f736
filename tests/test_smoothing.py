"""Gaussian smoothing equals scipy.ndimage.gaussian_filter (mode="reflect"), as both references smooth."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from clipad.models.smoothing import gaussian_smooth


@pytest.mark.parametrize(
    ("shape", "sigma"),
    [((2, 224, 224), 4.0), ((1, 37, 52), 4.0), ((3, 8, 6), 4.0), ((1, 112, 112), 4.0 * 112 / 518), ((1, 5, 5), 0.7)],
)
def test_smoothing_matches_scipy_gaussian_filter(shape, sigma):
    # (3, 8, 6) at sigma 4: the kernel (radius 16) is wider than the map, so the mirror repeats itself.
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = np.stack([gaussian_filter(m, sigma, mode="reflect") for m in maps.numpy()])
    # float64 on both sides: only the summation order differs.
    np.testing.assert_allclose(gaussian_smooth(maps, sigma).numpy(), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothing_cached_under_inference_mode_still_has_gradients(dtype):
    # float64: the cached matrix is the one built here, not a converted copy
    maps = torch.rand(1, 19, 23, dtype=dtype)
    with torch.inference_mode():
        gaussian_smooth(maps, 3.0)  # fills the matrix cache for this size
    leaf = maps.clone().requires_grad_()
    gaussian_smooth(leaf, 3.0).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_zero_sigma_is_no_smoothing():
    maps = torch.rand(2, 4, 4)
    assert gaussian_smooth(maps, 0.0) is maps
