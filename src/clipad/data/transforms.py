"""Image and mask preprocessing: the references' resize and normalisation, optional joint augmentations.

Images are resized with Pillow's bicubic filter (aspect ratio not kept), which antialiases when it shrinks,
exactly as torchvision's Resize does on PIL images in both reference codes; OpenCV's INTER_CUBIC (what
albumentations' Resize uses) does not antialias and shifts published numbers. Masks arrive as grey images
whose pixels > 127 are anomalous (clipad.data.image_io.read_mask); they are resized bilinearly (torchvision's
default for the references' mask transform) and thresholded at 0.5.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image


class SampleTransform:
    """(RGB image, grey mask or None) -> (normalised image [3,H,W] float, mask [1,H,W] in {0,1})."""

    def __init__(
        self,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        augment: Sequence[Any] | None = None,
    ) -> None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.size = (int(width), int(height))  # Pillow's order
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)
        self.augment = build_augmentation(augment)
        self._seeded_pid: int | None = None

    def __call__(self, image: Image.Image, mask: Image.Image | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is not None:
            image, mask = self._augmented(image, mask)
        pixels = np.asarray(image.resize(self.size, Image.BICUBIC), dtype=np.uint8)
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)
        tensor.sub_(self.mean).div_(self.std)
        if mask is None:
            return tensor, torch.zeros(1, self.size[1], self.size[0])
        grey = np.asarray(mask.resize(self.size, Image.BILINEAR))
        return tensor, torch.from_numpy(grey > 127).float().unsqueeze(0)  # > 0.5 of the 0..255 range

    def _augmented(self, image: Image.Image, mask: Image.Image | None) -> tuple[Image.Image, Image.Image]:
        if self._seeded_pid != os.getpid():
            # albumentations draws from its own generator, created in the main process: dataloader workers
            # would all repeat its draws. Reseed it once per process from torch's per-worker seed.
            self.augment.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_pid = os.getpid()
        grey = np.zeros((image.height, image.width), np.uint8) if mask is None else np.asarray(mask)
        out = self.augment(image=np.asarray(image), mask=grey)
        return Image.fromarray(out["image"]), Image.fromarray(out["mask"])


def build_augmentation(spec: Sequence[Any] | None):
    """albumentations.Compose from data.augment, or None when it is empty (the references: no augmentation).

    Each item is an albumentations class name, or a mapping with `name` and that class's arguments:
        data.augment=[HorizontalFlip, {name: Rotate, limit: 10, p: 0.5}]
    The transforms see the image and its mask together, at the image's original size, before the resize.
    """
    if not spec:
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network
    import albumentations  # lazy: a second of import time that runs without augmentations never need

    steps = []
    for item in spec:
        if isinstance(item, DictConfig | ListConfig):
            item = OmegaConf.to_container(item, resolve=True)
        if isinstance(item, str):
            name, kwargs = item, {}
        elif isinstance(item, Mapping) and "name" in item:
            kwargs = {k: v for k, v in item.items() if k != "name"}
            name = str(item["name"])
        else:
            raise ValueError(f"data.augment items are albumentations class names or {{name: ..., args}}: got {item!r}")
        transform_class = getattr(albumentations, name, None)
        if transform_class is None:
            raise ValueError(f"data.augment: albumentations has no transform {name!r}")
        steps.append(transform_class(**kwargs))
    return albumentations.Compose(steps)
