"""Backbone: token shapes for several models and sizes, positional-embedding resize, hooks, v-v path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from clipad.backbone import build_backbone
from clipad.backbone.pos_embed import resize_positional_embedding


def backbone_cfg(name: str, image_size: int, **extra):
    return OmegaConf.create({"name": name, "pretrained": None, "allow_random": True, "image_size": image_size, **extra})


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_backbone(backbone_cfg("clipad-tiny", 224), quick_gelu=False, pos_embed_interp="bicubic", vv_blocks=3)


@pytest.mark.parametrize(
    "name, size, grid, width, depth, layers",
    [
        ("ViT-L-14-336", 518, 37, 1024, 24, [6, 12, 18, 24]),
        ("ViT-L-14-336", 336, 24, 1024, 24, [6, 12, 18, 24]),
        ("ViT-B-16", 224, 14, 768, 12, [3, 6, 9, 12]),
        ("ViT-B-16-plus-240", 240, 15, 896, 12, [3, 6, 9, 12]),
        ("ViT-B-32", 256, 8, 768, 12, [3, 6, 9, 12]),
    ],
)
def test_large_models_build_on_meta_with_expected_geometry(name, size, grid, width, depth, layers):
    backbone = build_backbone(backbone_cfg(name, size), quick_gelu=False, pos_embed_interp="bicubic", device="meta")
    assert backbone.grid == (grid, grid)
    assert backbone.clip.visual.positional_embedding.shape == (1 + grid * grid, width)
    assert backbone.depth == depth and backbone.feature_layers == layers
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("size", [224, 160, 320])
def test_tiny_token_shapes(size):
    backbone = build_backbone(backbone_cfg("clipad-tiny", size), quick_gelu=False, pos_embed_interp="bilinear")
    features = backbone.encode_image(torch.randn(2, 3, size, size))
    n = (size // 16) ** 2
    assert [t.shape for t in features.layer_tokens] == [torch.Size([2, 1 + n, 64])] * 4
    assert features.last_tokens.shape == (2, 1 + n, 64)
    assert backbone.pooled_embedding(torch.randn(2, 3, size, size)).shape == (2, 64)


def test_plain_pass_equals_open_clip(tiny):
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(tiny.pooled_embedding(images), tiny.clip.encode_image(images), atol=1e-5)
        tokens = tiny.tokenize(["a photo of a cat.", "a much longer sentence about a damaged metal nut."])
        assert torch.allclose(tiny.encode_text(tokens), tiny.clip.encode_text(tokens), atol=1e-5)


def test_resize_keeps_cls_and_matches_torch_interpolate_without_antialias():
    pos = torch.randn(1 + 24 * 24, 8)
    resized = resize_positional_embedding(pos, (37, 37), "bicubic")
    assert resized.shape == (1 + 37 * 37, 8)
    assert torch.equal(resized[0], pos[0])
    grid = pos[1:].reshape(1, 24, 24, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(37, 37), mode="bicubic", align_corners=False, antialias=False)
    assert torch.allclose(resized[1:], expected.permute(0, 2, 3, 1).reshape(-1, 8))
    bilinear = resize_positional_embedding(pos, (37, 37), "bilinear")
    assert not torch.allclose(bilinear, resized)
    assert torch.equal(resize_positional_embedding(pos, (24, 24), "bicubic"), pos)
    with pytest.raises(ValueError, match="pos_embed_interp"):
        resize_positional_embedding(pos, (37, 37), "nearest")


class AppendThenReplace:
    """A VPT-deep style hook: append 2 tokens at block 0, replace them at block 1."""

    first_block = 0

    def __init__(self, width: int) -> None:
        self.tokens = torch.nn.Parameter(torch.randn(2, 2, width))
        self.calls: list[int] = []

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(index)
        if index == 0:
            return torch.cat([x, self.tokens[0].expand(x.shape[0], -1, -1)], dim=1)
        if index == 1:
            return torch.cat([x[:, :-2], self.tokens[1].expand(x.shape[0], -1, -1)], dim=1)
        return x


def test_image_hook_changes_tokens_drops_prompts_and_gets_gradients(tiny):
    images = torch.randn(2, 3, 224, 224)
    hook = AppendThenReplace(tiny.width)
    prompted = tiny.encode_image(images, before_block=hook)
    plain = tiny.encode_image(images)
    assert hook.calls == [0, 1, 2, 3]
    assert prompted.layer_tokens[0].shape == plain.layer_tokens[0].shape  # prompts dropped at read-out
    assert not torch.allclose(prompted.layer_tokens[-1], plain.layer_tokens[-1])
    prompted.layer_tokens[-1].sum().backward()
    assert hook.tokens.grad is not None and hook.tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())


class WriteTextPositions:
    first_block = 1

    def __init__(self, width: int) -> None:
        self.tokens = torch.nn.Parameter(torch.randn(2, width))

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index < self.first_block:
            return x
        x = x.clone()
        x[:, 1:3] = self.tokens
        return x


def test_text_hook_writes_positions_and_gets_gradients(tiny):
    tokens = tiny.tokenize(["a photo of a flawless bottle.", "a photo of a damaged bottle."])
    hook = WriteTextPositions(tiny.text_width)
    prompted = tiny.encode_text(tokens, before_block=hook)
    assert not torch.allclose(prompted, tiny.encode_text(tokens))
    prompted.sum().backward()
    assert hook.tokens.grad is not None and hook.tokens.grad.abs().sum() > 0


def test_value_value_path_only_changes_layers_in_its_blocks(tiny):
    images = torch.randn(2, 3, 224, 224)
    plain = tiny.encode_image(images)
    vv = tiny.encode_image(images, value_value=True)
    # vv_blocks=3 of 4: layer 1 (block 0) is ordinary, layers 2..4 come from the v-v path.
    assert torch.equal(vv.layer_tokens[0], plain.layer_tokens[0])
    assert all(not torch.allclose(a, b) for a, b in zip(vv.layer_tokens[1:], plain.layer_tokens[1:]))
    # The ordinary path is untouched; with the v-v path its attention shares the qkv projection and runs
    # through other kernels than nn.MultiheadAttention (float32 summation order only, ~1e-7).
    torch.testing.assert_close(vv.last_tokens, plain.last_tokens, atol=1e-6, rtol=1e-6)


def test_value_value_attention_matches_a_literal_formula(tiny):
    from clipad.backbone.value_value import value_value_attention

    block = tiny.clip.visual.transformer.resblocks[1]
    x = torch.randn(2, 5, tiny.width)
    attn = block.attn
    width, heads = tiny.width, attn.num_heads
    v = x @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
    v = v.reshape(2, 5, heads, width // heads).transpose(1, 2)
    weights = (v @ v.transpose(-1, -2) / (width // heads) ** 0.5).softmax(-1)
    expected = attn.out_proj((weights @ v).transpose(1, 2).reshape(2, 5, width))
    assert torch.allclose(value_value_attention(attn, x), expected, atol=1e-5)


def test_quick_gelu_option_changes_the_activation():
    gelu = build_backbone(backbone_cfg("clipad-tiny", 224), quick_gelu=False, pos_embed_interp="bicubic")
    quick = build_backbone(backbone_cfg("clipad-tiny", 224), quick_gelu=True, pos_embed_interp="bicubic")
    act = lambda b: type(b.clip.visual.transformer.resblocks[0].mlp.gelu).__name__  # noqa: E731
    assert act(gelu) == "GELU" and act(quick) == "QuickGELU"


def test_bad_sizes_and_names_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        build_backbone(backbone_cfg("clipad-tiny", 230), quick_gelu=False, pos_embed_interp="bicubic")
    with pytest.raises(ValueError, match="not an open_clip model"):
        build_backbone(backbone_cfg("ViT-Q-99", 224), quick_gelu=False, pos_embed_interp="bicubic")
    with pytest.raises(ValueError, match="allow_random"):
        build_backbone(OmegaConf.create({"name": "clipad-tiny", "image_size": 224}), quick_gelu=False,
                       pos_embed_interp="bicubic")


def literal_image_tower(backbone, images: torch.Tensor):
    """The image tower as open_clip's blocks run it, with the v-v path computed apart (no shared qkv)."""
    from clipad.backbone.value_value import value_value_attention

    x = backbone.embed_images(images)
    vv, layers = None, []
    for index, block in enumerate(backbone.clip.visual.transformer.resblocks):
        if index >= backbone.depth - backbone.vv_blocks:
            vv = (x if vv is None else vv) + value_value_attention(block.attn, block.ln_1(x))
        x = block(x)
        if index + 1 in backbone.feature_layers:
            layers.append(vv if vv is not None else x)
    return layers, x


@pytest.mark.parametrize("name, size, vv_blocks", [("clipad-tiny", 112, 3), ("clipad-tiny", 112, 0),
                                                   ("ViT-B-16", 96, 9)])
def test_shared_qkv_tower_matches_the_literal_one_and_skips_only_unread_work(name, size, vv_blocks):
    torch.manual_seed(0)
    backbone = build_backbone(backbone_cfg(name, size), quick_gelu=True, pos_embed_interp="bilinear", vv_blocks=vv_blocks)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        layers, last = literal_image_tower(backbone, images)
        full = backbone.encode_image(images, value_value=True)
        cls = backbone.encode_image(images, value_value=True, last_tokens="cls")
        pooled = backbone.pooled_embedding(images)
    # Shared qkv and stacked attention calls sum in another order than nn.MultiheadAttention: float32 last
    # bits of tokens of size ~1-10 (~1e-6 after 12 blocks); the maps' 1e-6 bound is tested in test_adaptclip.
    for ours, literal in zip(full.layer_tokens, layers, strict=True):
        torch.testing.assert_close(ours, literal, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.last_tokens, last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls.last_tokens[:, :1], last[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, backbone.project(last[:, 0]), atol=1e-5, rtol=1e-5)
    if vv_blocks:
        assert cls.last_tokens.shape[1] == 1  # the v-v path gives the last layer: only CLS is computed
        none = backbone.encode_image(images, value_value=True, last_tokens="none")
        assert none.last_tokens is None
        for ours, literal in zip(none.layer_tokens, layers, strict=True):
            torch.testing.assert_close(ours, literal, atol=1e-5, rtol=1e-5)
    else:
        assert cls.last_tokens.shape[1] == last.shape[1]  # the last layer is read: nothing is skipped
        with pytest.raises(ValueError, match="value-value path over the last block"):
            backbone.encode_image(images, value_value=True, last_tokens="none")
