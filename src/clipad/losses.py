"""Segmentation and classification losses shared by AdaCLIP and AdaptCLIP (focal + dice)."""
from __future__ import annotations

import torch


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on class PROBABILITIES (both references apply it after softmax).

    probs: [B, C, ...] summing to 1 over C; target: [B, ...] integer class ids.
    The one-hot target is clamped to [smooth/(C-1), 1-smooth] (label smoothing 1e-5 as the references),
    and smooth is added to p_t so log never sees 0.
    """
    num_classes = probs.shape[1]
    one_hot = torch.nn.functional.one_hot(target.long(), num_classes).movedim(-1, 1).to(probs.dtype)
    one_hot = one_hot.clamp(smooth / max(num_classes - 1, 1), 1.0 - smooth)
    p_t = (one_hot * probs).sum(dim=1) + smooth
    return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch. probs, target: [B, ...] in [0, 1]."""
    probs = probs.flatten(1)
    target = target.flatten(1).to(probs.dtype)
    dice = (2.0 * (probs * target).sum(1) + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return 1.0 - dice.mean()


def segmentation_loss(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Focal + dice(abnormal, mask) + dice(normal, 1 - mask) for 2-channel [B, 2, H, W] probabilities.

    mask: [B, H, W] (or [B, 1, H, W]) in {0, 1}.
    """
    mask = mask.reshape(probs.shape[0], *probs.shape[2:])
    return focal_loss(probs, mask.long()) + dice_loss(probs[:, 1], mask) + dice_loss(probs[:, 0], 1.0 - mask)
