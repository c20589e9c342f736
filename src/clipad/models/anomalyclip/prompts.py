"""AnomalyCLIP's object-agnostic text prompts and the hook that writes them into the frozen text tower.

Two sentences, no class names: "X ... X object." (normal) and "X ... X damaged object." (anomalous). The
placeholder slots hold learnable context tokens (one set per sentence), and before text blocks
1..depth-1 the hidden states at positions 1..length are overwritten by deep prompts shared by both
sentences (overwritten, not concatenated: the reference code and its author, issue #75).
"""

from __future__ import annotations

import torch
from torch import nn

PLACEHOLDER = "X"
INIT_STD = 0.02  # N(0, 0.02^2), as the reference initialises context and deep prompts


def prompt_sentences(context_tokens: int) -> tuple[str, str]:
    """The normal and the anomalous sentence, each starting with `context_tokens` placeholders."""
    context = " ".join([PLACEHOLDER] * context_tokens)
    return f"{context} object.", f"{context} damaged object."


class ObjectAgnosticPrompts(nn.Module):
    """Context tokens of both sentences ([n, width] each) and `depth - 1` deep prompts ([length, width])."""

    def __init__(self, text_width: int, context_tokens: int = 12, depth: int = 9, length: int = 4) -> None:
        super().__init__()
        if context_tokens < 1:
            raise ValueError(f"model.context_tokens={context_tokens} must be at least 1")
        if not 1 <= length <= context_tokens:
            raise ValueError(
                f"model.deep_prompt_length={length} must lie in 1..model.context_tokens={context_tokens}: deep "
                "prompts overwrite the first context slots and must not reach the sentence's words"
            )
        if depth < 1:
            raise ValueError(f"model.deep_prompt_depth={depth} must be >= 1 (1: no deep prompts)")
        self.ctx_normal = nn.Parameter(torch.empty(context_tokens, text_width))
        self.ctx_anomalous = nn.Parameter(torch.empty(context_tokens, text_width))
        self.deep = nn.ParameterList(nn.Parameter(torch.empty(length, text_width)) for _ in range(depth - 1))
        for tensor in self.parameters():
            nn.init.normal_(tensor, std=INIT_STD)

    @property
    def context_tokens(self) -> int:
        return self.ctx_normal.shape[0]


class PromptWriter:
    """Backbone text hook. Before block 0 (token + positional embeddings): the context tokens, plus their
    positional embedding, replace the placeholders of each sentence. Before blocks 1..len(deep): positions
    1..length are overwritten by that block's deep prompt (no positional embedding, as the reference).

    round_deep_to_fp16 reproduces a reference quirk: it casts the deep prompts to fp16 before insertion,
    and the concatenation promotes them back, so only the prompts lose precision.
    """

    first_block = 0

    def __init__(self, prompts: ObjectAgnosticPrompts, positional_embedding: torch.Tensor,
                 round_deep_to_fp16: bool = False) -> None:
        self.prompts = prompts
        self.positional_embedding = positional_embedding  # [context_length, width]
        self.round_deep_to_fp16 = round_deep_to_fp16

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        prompts = self.prompts
        if index == 0:
            n = prompts.context_tokens
            context = torch.stack([prompts.ctx_normal, prompts.ctx_anomalous]) + self.positional_embedding[1 : 1 + n]
            return torch.cat([x[:, :1], context.to(x.dtype), x[:, 1 + n :]], dim=1)
        if index > len(prompts.deep):
            return x
        deep = prompts.deep[index - 1]
        if self.round_deep_to_fp16:
            deep = deep.to(torch.float16)
        deep = deep.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], deep, x[:, 1 + deep.shape[1] :]], dim=1)
