"""The k normal prompt (reference) images of few-shot models: AdaptCLIP's prompt memory, WinCLIP+'s memory."""
from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Protocol

import lightning as L
import torch

from clipad.errors import ConfigError


class NormalPromptSource(Protocol):
    """Whatever supplies the k normal prompt images of a class (the datamodule, or a stub/folder)."""

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor: ...  # [k, 3, H, W]
    # multi-view datasets: also normal_prompt_images(dataset, cls_name, view_id), the prompts of one view


def normal_prompt_images(module: L.LightningModule, source: NormalPromptSource | None, shots: int, dataset: str,
                         cls_name: str, view_id: str | None = None) -> torch.Tensor:
    """[k, 3, H, W] from `source`, else from the datamodule of the Trainer the module runs under."""
    if source is None:
        try:
            source = module.trainer.datamodule
        except RuntimeError:  # not attached to a Trainer
            source = None
    if source is None or not hasattr(source, "normal_prompt_images"):
        raise ConfigError(
            f"shots={shots} needs normal prompt images: run under a Trainer whose datamodule has "
            "normal_prompt_images(dataset, cls_name), or give predict/export/app shots_dir=FOLDER"
        )
    if view_id is None:
        images = source.normal_prompt_images(dataset, cls_name)
    else:
        images = source.normal_prompt_images(dataset, cls_name, view_id)
    if images.ndim != 4 or images.shape[0] != shots:
        raise ValueError(f"normal_prompt_images({dataset!r}, {cls_name!r}) returned shape {tuple(images.shape)}; "
                         f"expected [{shots}, 3, H, W] (shots={shots})")
    return images


def rows_per_key(keys: list[Hashable], device: torch.device) -> Iterator[tuple[Hashable, torch.Tensor]]:
    """Each distinct key of a batch (first seen first) with the rows [n] that carry it: the queries one prompt
    memory answers together."""
    for key in dict.fromkeys(keys):
        yield key, torch.tensor([i for i, k in enumerate(keys) if k == key], device=device)
