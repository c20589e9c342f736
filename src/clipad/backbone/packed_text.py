"""Sentences that share a prefix, packed into one causal sequence per row of the text tower, as a token tree.

Under CLIP's causal mask a position only sees itself and earlier positions, so a position's state depends
only on the tokens up to it. From block 1 on, positions 0..P-1 hold the same states in every sentence of
a row (start-of-text, then prompt tokens written before each block): they are computed once per row.
Every later position is computed once per distinct token prefix: sentences that begin alike ("bottle
without flaw." and "bottle without defect." after the same template) share those positions. A packed
position sees the shared prefix, its ancestors in the tree and itself. Padding after a sentence's
end-of-text token is never computed. The end-of-text states equal those of the padded [T, 77] batch up
to summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipad.backbone.value_value import merge_heads, split_heads


@dataclass(frozen=True)
class PackedSentences:
    """One set of sentences as a token tree: a state per distinct token prefix, and who sees whom."""

    states: torch.Tensor  # [S, C] block-0 states, the shared prefix first
    allowed: torch.Tensor  # [S, S] bool, query x key: the node's ancestors and itself
    eot: torch.Tensor  # [T] packed index of each sentence's end-of-text node

    @classmethod
    def build(cls, states: torch.Tensor, token_ids: torch.Tensor, prefix: int) -> PackedSentences:
        """states: [T, L, C] padded per-sentence states; token_ids: [T, >= L] (end-of-text: the largest id)."""
        length = states.shape[1]
        ids = token_ids[:, :length].tolist()
        ends = token_ids[:, :length].argmax(dim=-1).tolist()
        if min(ends) < prefix:
            raise ValueError(f"a sentence ends at position {min(ends)}, inside the shared prefix of {prefix}")
        source = list(range(prefix))  # the prefix is read from sentence 0
        parent = list(range(-1, prefix - 1))
        node_of: dict[tuple[int, ...], int] = {}
        eot = []
        for sentence, (row, end) in enumerate(zip(ids, ends, strict=True)):
            node = prefix - 1
            for position in range(prefix, end + 1):
                key = tuple(row[: position + 1])  # the state depends on the tokens up to here only
                if key not in node_of:
                    node_of[key] = len(source)
                    source.append(sentence * length + position)
                    parent.append(node)
                node = node_of[key]
            eot.append(node)
        # Built row by row in Python: a few hundred nodes, once per class name.
        allowed = torch.zeros(len(source), len(source), dtype=torch.bool)
        for node, up in enumerate(parent):
            if up >= 0:
                allowed[node] = allowed[up]
            allowed[node, node] = True
        index = torch.tensor(source, device=states.device)
        return cls(states.flatten(0, 1)[index], allowed.to(states.device), torch.tensor(eot, device=states.device))

    def __len__(self) -> int:
        return self.states.shape[0]


@dataclass
class PackedText:
    states: torch.Tensor  # [R, S, C]
    allowed: torch.Tensor  # [R, S, S] bool, query x key
    eot: torch.Tensor  # [R, T] packed index of each sentence's end-of-text state


def pack_rows(rows: list[PackedSentences]) -> PackedText:
    """One row per set of sentences, padded to the longest; a padding slot sees only itself (never read)."""
    size = max(len(row) for row in rows)
    itself = torch.eye(size, dtype=torch.bool, device=rows[0].allowed.device)
    states, allowed = [], []
    for row in rows:
        pad = size - len(row)
        states.append(F.pad(row.states, (0, 0, 0, pad)))
        allowed.append(F.pad(row.allowed, (0, pad, 0, pad)) | itself)
    return PackedText(torch.stack(states), torch.stack(allowed), torch.stack([row.eot for row in rows]))


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, S, S] bool -> [R, 1, S, S] 0 / -inf: made once per tower pass (a bool mask would be converted
    inside every attention call)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return mask.unsqueeze(1)


def packed_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """An open_clip text block on packed states x [R, S, C] under the tree's additive mask [R, 1, S, S].

    rows [R, T]: the output is wanted only there (the end-of-text states, in the last block): keys and
    values of every position, queries, MLP and residual only at those rows; returns [R, T, C].
    """
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    if rows is not None:
        index = rows.unsqueeze(-1)
        q = q.gather(1, index.expand(-1, -1, q.shape[-1]))
        mask = mask.gather(2, index.unsqueeze(1).expand(-1, -1, -1, mask.shape[-1]))
        x = x.gather(1, index.expand(-1, -1, x.shape[-1]))
    attended = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                                              attn_mask=mask.to(q.dtype))
    out = x + block.ls_1(attn.out_proj(merge_heads(attended)))
    return out + block.ls_2(block.mlp(block.ln_2(out)))
