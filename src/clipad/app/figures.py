"""The page's figure of one image: the original | the anomaly-map overlay with its colour bar and the outline
of the predicted defect mask; the title gives the score and the decision."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clipad.report.heatmaps import save_figure, scale_label  # noqa: E402

OUTLINE_COLOUR = "white"


def save_inspection_figure(path: Path, preview: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray,
                           title: str, colour_range: tuple[float, float], scaling: str) -> Path:
    """preview [h, w, 3] uint8, anomaly_map and mask (bool) [h, w]; colours span colour_range."""
    low, high = colour_range
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4), constrained_layout=True)
    axes[0].imshow(preview)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(preview)
    heat = axes[1].imshow(anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
    if mask.any() and not mask.all():  # a contour needs both sides
        axes[1].contour(mask.astype(np.float32), levels=[0.5], colors=OUTLINE_COLOUR, linewidths=1.2)
    axes[1].set_title("overlay, predicted defect outlined", fontsize=9)
    bar = fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    bar.set_label(scale_label(scaling, low, high), fontsize=7)
    return save_figure(fig, axes, title, path)
