"""AdaCLIP's mosaic augmentation: four images of one class tiled 2x2, their masks tiled alike."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def tile_2x2(images: Sequence[Image.Image], masks: Sequence[Image.Image | None]) -> tuple[Image.Image, Image.Image]:
    """Tile four images as [0 1; 2 3] at the first image's size; a None mask is an all-normal tile.

    The reference pastes the tiles without resizing (images of one MVTec class share a size); tiles of
    another size are resized here so that they neither overlap nor leave gaps.
    """
    if len(images) != 4 or len(masks) != 4:
        raise ValueError(f"a 2x2 mosaic needs 4 images and 4 masks, got {len(images)} and {len(masks)}")
    width, height = images[0].size
    canvas = Image.new("RGB", (2 * width, 2 * height))
    mask_canvas = Image.new("L", (2 * width, 2 * height))
    for i, (image, mask) in enumerate(zip(images, masks)):
        corner = ((i % 2) * width, (i // 2) * height)
        canvas.paste(image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC), corner)
        if mask is not None:
            mask_canvas.paste(mask if mask.size == (width, height) else mask.resize((width, height), Image.BILINEAR),
                              corner)
    return canvas, mask_canvas
