"""Heatmap figures: image | ground truth | anomaly map overlay (evaluation) and image | map | overlay (prediction)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def denormalise(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """[3, H, W] normalised tensor -> [H, W, 3] uint8 for display."""
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    rgb = (image * std_t + mean_t).clamp(0, 1)
    return (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


SCALINGS = ("per_image", "per_dataset", "absolute")


def display_range(
    anomaly_map: np.ndarray, scaling: str, dataset_max: float | None = None, dataset_min: float = 0.0
) -> tuple[float, float]:
    """Colour range. Raw scores can all sit near 0 (unreadable); per-image or per-dataset scaling fixes it.

    per_dataset spans [dataset_min, dataset_max] of all maps shown together (colours comparable across them).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling={scaling!r}: choose one of {SCALINGS}")
    if scaling == "per_image":
        low, high = float(anomaly_map.min()), float(anomaly_map.max())
    elif scaling == "per_dataset" and dataset_max is not None:
        low, high = dataset_min, dataset_max
    else:  # "absolute": the [0, 1] score scale
        low, high = 0.0, 1.0
    return low, max(high, low + 1e-6)


def scale_label(scaling: str, low: float, high: float) -> str:
    return f"score ({scaling.replace('_', ' ')} scale: {low:.3g}-{high:.3g})"


def save_heatmap_figure(
    path: Path,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None,
    title: str,
    scaling: str = "per_image",
    dataset_max: float | None = None,
) -> Path:
    """Write one PNG; the colour scaling is stated under the colour bar."""
    low, high = display_range(anomaly_map, scaling, dataset_max)
    panels = 3 if mask is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels + 0.6, 3.4), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title("image")
    if mask is not None:
        axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        axes[1].set_title("ground truth")
    axes[-1].imshow(image)
    overlay = axes[-1].imshow(anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
    axes[-1].set_title("anomaly map")
    bar = fig.colorbar(overlay, ax=axes[-1], fraction=0.046, pad=0.04)
    bar.set_label(scale_label(scaling, low, high), fontsize=7)
    return save_figure(fig, axes, title, path)


def save_prediction_figure(
    path: Path,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    title: str,
    scaling: str = "per_dataset",
    dataset_range: tuple[float, float] | None = None,
) -> Path:
    """Write one PNG: image | anomaly map with its colour bar | overlay; the scaling is stated on the bar.

    image [H, W, 3] uint8 and anomaly_map [H, W] of the same size; dataset_range (min, max) for per_dataset.
    """
    dataset_min, dataset_max = dataset_range if dataset_range is not None else (0.0, None)
    low, high = display_range(anomaly_map, scaling, dataset_max, dataset_min)
    fig, axes = plt.subplots(1, 3, figsize=(10.2, 3.4), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title("image")
    heat = axes[1].imshow(anomaly_map, cmap="jet", vmin=low, vmax=high)
    axes[1].set_title("anomaly map")
    bar = fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    bar.set_label(scale_label(scaling, low, high), fontsize=7)
    axes[2].imshow(image)
    axes[2].imshow(anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
    axes[2].set_title("overlay")
    return save_figure(fig, axes, title, path)


def save_figure(fig, axes, title: str, path: Path) -> Path:
    """Axes off, the title on top, written at 80 dpi (every clipad figure), and the figure closed."""
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
