"""Sentences that share a prefix, packed into one causal sequence per row of the text tower.

Under CLIP's causal mask a position only sees itself and earlier positions. When positions 0..P-1 hold
the same states in every sentence of a row (start-of-text, then prompt tokens written before each
block), they are computed once per row; each sentence then contributes only its positions P..EOT, and
the mask lets them see the shared prefix and their own earlier positions. Padding after a sentence's
end-of-text token is never computed. The end-of-text states equal those of the padded [T, 77] batch
up to summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipad.backbone.value_value import merge_heads, split_heads


@dataclass(frozen=True)
class SentenceLayout:
    """Where one set of sentences' states sit in a packed row (a pure function of their lengths)."""

    source: torch.Tensor  # [S] index into the sentences' flattened [T * L] states
    sentence: torch.Tensor  # [S] sentence of each packed position; -1 for the shared prefix
    position: torch.Tensor  # [S] position of each packed state in its own sentence
    eot: torch.Tensor  # [T] packed index of each sentence's end-of-text state

    @classmethod
    def build(cls, eot: torch.Tensor, length: int, prefix: int) -> SentenceLayout:
        """eot: [T] end-of-text index per sentence in the padded [T, length] states; all must be >= prefix."""
        if int(eot.min()) < prefix:
            raise ValueError(f"a sentence ends at position {int(eot.min())}, inside the shared prefix of {prefix}")
        source = [torch.arange(prefix)]  # the prefix is read from sentence 0
        sentence = [torch.full((prefix,), -1)]
        position = [torch.arange(prefix)]
        ends = []
        offset = prefix
        for index, end in enumerate(eot.tolist()):
            own = torch.arange(prefix, end + 1)
            source.append(index * length + own)
            sentence.append(torch.full_like(own, index))
            position.append(own)
            offset += len(own)
            ends.append(offset - 1)
        return cls(torch.cat(source), torch.cat(sentence), torch.cat(position), torch.tensor(ends))

    def __len__(self) -> int:
        return len(self.source)


@dataclass
class PackedText:
    states: torch.Tensor  # [R, S, C]
    mask: torch.Tensor  # [R, S, S] additive (0 or -inf)
    eot: torch.Tensor  # [R, T] packed index of each sentence's end-of-text state


def allowed_attention(layout: SentenceLayout, size: int) -> torch.Tensor:
    """[size, size] bool, query x key: the prefix causally among itself; a sentence's position sees the
    prefix and its own earlier positions. Padding past len(layout) sees only itself (never read)."""
    n = len(layout)
    pad = torch.arange(n, size)
    sentence = torch.cat([layout.sentence, -2 - pad])  # a distinct sentence per padding slot
    position = torch.cat([layout.position, torch.zeros_like(pad)])
    in_prefix = sentence == -1
    earlier = position[None, :] <= position[:, None]
    same = sentence[:, None] == sentence[None, :]
    sees_prefix = in_prefix[None, :] & (~in_prefix[:, None] | earlier)
    return sees_prefix | (same & earlier)


def pack_rows(states: list[torch.Tensor], layouts: list[SentenceLayout]) -> PackedText:
    """states[r]: [T, L_r, C] per-sentence states of row r (padded); layouts[r]: their layout."""
    size = max(len(layout) for layout in layouts)
    device = states[0].device
    rows, masks = [], []
    for row_states, layout in zip(states, layouts, strict=True):
        packed = row_states.flatten(0, 1)[layout.source.to(device)]
        rows.append(torch.cat([packed, packed.new_zeros(size - len(layout), packed.shape[-1])]))
        masks.append(allowed_attention(layout, size))
    allowed = torch.stack(masks).to(device)
    mask = torch.zeros(allowed.shape, dtype=states[0].dtype, device=device).masked_fill_(~allowed, float("-inf"))
    eot = torch.stack([layout.eot for layout in layouts]).to(device)
    return PackedText(torch.stack(rows), mask, eot)


def block_at_rows(block: nn.Module, x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """An open_clip text block on packed states x [R, S, C] (additive mask [R, S, S]) whose output is
    wanted only at `rows` [R, T] (the end-of-text states, in the last block): keys and values of every
    position, queries, MLP and residual only at those rows. Returns [R, T, C]."""
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    index = rows.unsqueeze(-1)
    q = q.gather(1, index.expand(-1, -1, q.shape[-1]))
    row_mask = mask.gather(1, index.expand(-1, -1, mask.shape[-1])).unsqueeze(1).to(q.dtype)  # [R, 1, T, S]
    attended = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                                              attn_mask=row_mask)
    out = x.gather(1, index.expand(-1, -1, x.shape[-1])) + block.ls_1(attn.out_proj(merge_heads(attended)))
    return out + block.ls_2(block.mlp(block.ln_2(out)))
