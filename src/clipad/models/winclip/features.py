"""The three kinds of WinCLIP image features: image embedding, window embeddings per scale, patch tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clipad.backbone import ClipBackbone
from clipad.errors import ConfigError
from clipad.models.winclip.windows import run_blocks, window_embeddings, window_indices


@dataclass
class WinCLIPFeatures:
    image: torch.Tensor  # [B, D]: ln_post(CLS) @ proj of the whole image
    windows: dict[int, torch.Tensor]  # scale -> [B, n_windows, D]
    patches: torch.Tensor  # [B, N, width]: last-layer patch tokens after ln_post, not projected

    def select(self, rows: torch.Tensor) -> WinCLIPFeatures:
        """The features of the images at `rows`."""
        return WinCLIPFeatures(self.image[rows], {s: w[rows] for s, w in self.windows.items()}, self.patches[rows])

    @classmethod
    def concatenate(cls, parts: list[WinCLIPFeatures]) -> WinCLIPFeatures:
        return cls(image=torch.cat([p.image for p in parts]),
                   windows={s: torch.cat([p.windows[s] for p in parts]) for s in parts[0].windows},
                   patches=torch.cat([p.patches for p in parts]))


class WindowEncoder:
    """WinCLIPFeatures of images, for one backbone and set of window scales (index sets built once)."""

    def __init__(self, backbone: ClipBackbone, scales: tuple[int, ...], max_sequences: int) -> None:
        if max_sequences < 1:
            raise ConfigError(f"model.window_batch={max_sequences} must be >= 1 (window sequences per pass)")
        rows, cols = backbone.grid
        if not scales or len(set(scales)) != len(scales) or not all(1 <= s <= min(rows, cols) for s in scales):
            raise ConfigError(f"model.scales={list(scales)} must be distinct window sizes in patches that fit the "
                              f"{rows}x{cols} patch grid of backbone.image_size={backbone.image_size}, e.g. [2, 3]")
        self.backbone = backbone
        self.max_sequences = max_sequences
        self.indices = {s: window_indices(backbone.grid, s) for s in scales}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> WinCLIPFeatures:
        backbone = self.backbone
        # After ln_pre: it normalises each token alone, so a window may pick its tokens from these.
        tokens = backbone.embed_images(images)
        full = run_blocks(backbone, tokens)
        windows = {s: window_embeddings(backbone, tokens, idx, self.max_sequences) for s, idx in self.indices.items()}
        return WinCLIPFeatures(image=backbone.project(full[:, 0]), windows=windows,
                               patches=backbone.clip.visual.ln_post(full[:, 1:]))
