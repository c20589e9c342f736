"""Value-value self-attention (AnomalyCLIP's DPAM, used by AdaptCLIP) on a frozen CLIP block."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def value_value_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention whose queries and keys are the values: softmax(v v^T / sqrt(d)) v, then out_proj.

    Reuses the block's own value projection and output projection, so it adds no parameters.
    x: [B, L, C] (already layer-normed by the block's ln_1).
    """
    batch, length, width = x.shape
    heads = attn.num_heads
    w_v = attn.in_proj_weight[2 * width :]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = F.linear(x, w_v, b_v).reshape(batch, length, heads, width // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(v, v, v)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))
