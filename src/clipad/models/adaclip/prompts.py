"""AdaCLIP's learnable prompts and the hooks that put them into the frozen CLIP towers.

Static prompts are parameters shared by all images; dynamic prompts are generated per image from its
plain (unprompted) CLIP embedding and added to the static ones. The same dynamic tokens are reused at
every prompted block and, in the text tower, for every sentence of the image.
"""

from __future__ import annotations

import torch
from torch import nn

STATIC_INIT_STD = 0.02  # the reference initialises static prompts with N(0, 0.02^2)


class StaticPrompts(nn.Module):
    """One learnable [length, width] token block per prompted transformer block."""

    def __init__(
        self, blocks: int, length: int, width: int, device: str | torch.device | None = None
    ) -> None:
        super().__init__()
        self.tokens = nn.ParameterList(
            nn.Parameter(torch.empty(length, width, device=device)) for _ in range(blocks)
        )
        for tokens in self.tokens:
            nn.init.normal_(tokens, std=STATIC_INIT_STD)


class DynamicPromptGenerator(nn.Module):
    """Per-image prompt tokens, [B, D] -> [B, length, width]: one Linear(D -> width) with bias per token."""

    def __init__(
        self, embed_dim: int, length: int, width: int, device: str | torch.device | None = None
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(embed_dim, width, device=device) for _ in range(length))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(embedding) for head in self.heads], dim=1)


def prompt_tokens(
    static: torch.Tensor | None, dynamic: torch.Tensor | None, rows: int, like: torch.Tensor
) -> torch.Tensor:
    """Static [M, C] and/or dynamic [rows, M, C] tokens combined to [rows, M, C] in `like`'s dtype."""
    if static is None and dynamic is None:
        raise ValueError("a prompt hook needs static or dynamic prompt tokens")
    if dynamic is None:
        tokens = static.unsqueeze(0).expand(rows, -1, -1)
    elif static is None:
        tokens = dynamic
    else:
        tokens = dynamic + static
    return tokens.to(like.dtype)


class ImagePromptHook:
    """VPT-deep in the image tower: M tokens appended after the patches before block 0, replaced before
    blocks 1..J-1, then carried along unchanged (the backbone drops them when it reads tokens out).

    Block 0's input is already past ln_pre and the positional embedding, so the tokens skip both.
    """

    first_block = 0

    def __init__(
        self, static: StaticPrompts | None, dynamic: torch.Tensor | None, depth: int, length: int
    ) -> None:
        self.static = static
        self.dynamic = dynamic  # [B, M, width] or None
        self.depth = depth
        self.length = length

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index >= self.depth:
            return x
        static = self.static.tokens[index] if self.static is not None else None
        tokens = prompt_tokens(static, self.dynamic, x.shape[0], x)
        kept = x if index == 0 else x[:, : -self.length]
        return torch.cat([kept, tokens], dim=1)


class TextPromptHook:
    """Before text blocks 1..J-1, the hidden states at positions 1..M (right after start-of-text; they hold
    template words, there are no placeholder tokens) are overwritten by prompt tokens. Block 0 is never
    prompted, as in the reference, and the end-of-text position is never touched (checked by the caller).
    """

    first_block = 1  # block 0 sees no prompt, so it runs without autograd

    def __init__(
        self, static: StaticPrompts | None, dynamic: torch.Tensor | None, depth: int, length: int
    ) -> None:
        self.static = static  # tokens[j] is used before block j + 1
        self.dynamic = dynamic  # [T, M, text_width] (one row per sentence) or None
        self.depth = depth
        self.length = length

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if not 1 <= index < self.depth:
            return x
        static = self.static.tokens[index - 1] if self.static is not None else None
        tokens = prompt_tokens(static, self.dynamic, x.shape[0], x)
        return torch.cat([x[:, :1], tokens, x[:, 1 + self.length :]], dim=1)
