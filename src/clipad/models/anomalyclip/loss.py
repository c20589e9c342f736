"""AnomalyCLIP's training loss: lambda x segmentation loss per feature layer + image cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipad.losses import segmentation_loss
from clipad.models.adaptclip.scoring import BranchOutput


def anomalyclip_loss(outputs: list[BranchOutput], label: torch.Tensor, mask: torch.Tensor,
                     pixel_rows: torch.Tensor, segmentation_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation term, image term). Segmentation: focal + dice(p_abn, mask) + dice(p_norm, 1 - mask),
    summed over the feature layers, on the rows that have pixel supervision, times the weight (the reference's
    lambda = 4, which keeps the published single-layer setting equal to its old four identical layers).
    Image: cross-entropy of the global logits (shared by every layer, so counted once).
    """
    image_term = F.cross_entropy(outputs[0].logits, label)
    if not bool(pixel_rows.any()):
        return image_term.new_zeros(()), image_term
    segmentation = sum(segmentation_loss(o.probs[pixel_rows], mask[pixel_rows]) for o in outputs)
    return segmentation_weight * segmentation, image_term
