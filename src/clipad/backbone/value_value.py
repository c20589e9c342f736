"""Value-value self-attention (AnomalyCLIP's DPAM, used by AdaptCLIP) on a frozen CLIP block, and a block
step that runs it beside the ordinary attention from one shared qkv projection."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# Which positions of the ordinary path a block must output: all, the CLS token only (its last block when
# only the pooled embedding is read), or none (only the v-v path is read after it).
OrdinaryRows = Literal["all", "cls", "none"]


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, C] -> [B, heads, L, C / heads]"""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads * d]"""
    return t.transpose(1, 2).flatten(2)


def value_value_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention whose queries and keys are the values: softmax(v v^T / sqrt(d)) v, then out_proj.

    Reuses the block's own value projection and output projection, so it adds no parameters.
    x: [B, L, C] (already layer-normed by the block's ln_1).
    """
    v = split_heads(F.linear(x, *_value_weights(attn)), attn.num_heads)
    return attn.out_proj(merge_heads(F.scaled_dot_product_attention(v, v, v)))


def _mlp_step(block: nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    x = x + block.ls_1(attended)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def block_step(
    block: nn.Module, x: torch.Tensor, vv: torch.Tensor | None, value_value: bool, rows: OrdinaryRows
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One open_clip ResidualAttentionBlock (no mask) on x [B, L, C], optionally with the v-v path beside it.

    Returns (ordinary output: [B, L, C] for rows="all", [B, 1, C] for "cls", None for "none"; the v-v
    residual stream, which starts from x at its first block, or None without value_value). The ordinary
    attention and the v-v attention share ln_1(x) and one qkv projection; with both over all positions,
    they run as one attention call and one output projection on the two stacked along the batch
    (row-wise the same arithmetic). Queries of positions that are never read are not computed.
    """
    attn = block.attn
    heads = attn.num_heads
    normed = block.ln_1(x)
    if rows == "none" and value_value:
        return None, (x if vv is None else vv) + value_value_attention(attn, normed)
    q, k, v = (split_heads(t, heads) for t in F.linear(normed, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    if rows == "cls":
        q = q[:, :, :1]
    vv_base = x if vv is None else vv
    if not value_value:
        attended = attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return _mlp_step(block, x[:, : q.shape[2]], attended), None
    if rows == "all":
        both = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
        ordinary, value = attn.out_proj(merge_heads(both)).chunk(2)
        return _mlp_step(block, x, ordinary), vv_base + value
    ordinary = attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
    value = attn.out_proj(merge_heads(F.scaled_dot_product_attention(v, v, v)))
    return _mlp_step(block, x[:, :1], ordinary), vv_base + value


def _value_weights(attn: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor | None]:
    width = attn.embed_dim
    bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    return attn.in_proj_weight[2 * width :], bias
