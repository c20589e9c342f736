"""AdaptCLIP's textual adapter: CoOp-style learnable context for a "normal" and an "anomalous" prompt."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipad.backbone import ClipBackbone

PLACEHOLDER = "X"


class _ContextWriter:
    """Backbone text hook: before block 0, write context + positional embedding at positions 1..n.

    Block 0 receives token embeddings + positional embeddings, so overwriting the placeholders' slots
    there is exactly CoOp's "learnable token embeddings" (start-of-text stays at 0, "." and end-of-text
    follow the context).
    """

    first_block = 0

    def __init__(self, context: torch.Tensor, positional_embedding: torch.Tensor) -> None:
        self.context = context  # [P, n, width]
        self.positional_embedding = positional_embedding  # [context_length, width]

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index != 0:
            return x
        n = self.context.shape[1]
        written = self.context + self.positional_embedding[1 : 1 + n]
        return torch.cat([x[:, :1], written.to(x.dtype), x[:, 1 + n :]], dim=1)


class TextualAdapter(nn.Module):
    """Learnable context tokens (no template words, no class names), scored against frozen image features.

    Prompt: start-of-text, n placeholders, ".", end-of-text; the placeholders' embeddings are replaced
    by `ctx_normal` in the normal prompt and by `ctx_anomalous` in the anomalous one.
    """

    def __init__(self, text_width: int, context_tokens: int = 12) -> None:
        super().__init__()
        if context_tokens < 1:
            raise ValueError(f"model.context_tokens={context_tokens} must be at least 1")
        self.ctx_normal = nn.Parameter(torch.empty(context_tokens, text_width))
        self.ctx_anomalous = nn.Parameter(torch.empty(context_tokens, text_width))
        for ctx in (self.ctx_normal, self.ctx_anomalous):
            nn.init.normal_(ctx, std=0.02)  # CoOp's initialisation of generic context

    @property
    def template(self) -> str:
        return " ".join([PLACEHOLDER] * self.ctx_normal.shape[0]) + " ."

    def forward(self, backbone: ClipBackbone) -> torch.Tensor:
        """[2, D] unit text embeddings (normal, anomalous), differentiable in the context tokens."""
        token_ids = backbone.tokenize([self.template])
        n = self.ctx_normal.shape[0]
        if int(token_ids[0].argmax()) != n + 2:  # start, n placeholders, "." -> end-of-text at n + 2
            raise ValueError(f"the tokenizer does not turn {PLACEHOLDER!r} into one token per placeholder")
        hook = _ContextWriter(
            torch.stack([self.ctx_normal, self.ctx_anomalous]), backbone.clip.positional_embedding
        )
        return F.normalize(backbone.encode_text(token_ids.expand(2, -1), before_block=hook), dim=-1)
