"""A frozen open_clip CLIP with the entry points both method families need.

open_clip's model definitions, weights and tokenizer are reused as they are; clipad only drives the
residual blocks itself, so that prompt tokens can be appended or written before a block
(AdaCLIP), a value-value path can run beside the last blocks (AdaptCLIP), and the tokens of chosen
layers can be read out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import open_clip
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.checkpoint import checkpoint

from clipad.backbone.packed_text import PackedText, additive_mask, packed_block
from clipad.backbone.pos_embed import resize_positional_embedding
from clipad.backbone.value_value import OrdinaryRows, block_step
from clipad.backbone.weights import resolve_pretrained

log = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


class BlockHook(Protocol):
    """Called with (block index, hidden states [B, L, C]) before that block; returns the new states."""

    first_block: int  # blocks before this one run without autograd: the hook cannot affect them

    def __call__(self, index: int, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ImageFeatures:
    layer_tokens: list[torch.Tensor]  # per feature layer [B, 1 + N, width]: CLS then patches, prompts dropped
    last_tokens: torch.Tensor | None  # [B, 1 + N, width] of the ordinary path after the last block ([B, 1,
    # width] when only CLS was asked for, None when nothing was)
    grid: tuple[int, int]  # patch grid (rows, cols)


def register_clipad_models() -> None:
    """Make clipad's own model configs (e.g. `clipad-tiny`) known to open_clip's registry."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


class ClipBackbone(nn.Module):
    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        image_size: int,
        feature_layers: list[int] | None,
        pos_embed_interp: str,
        vv_blocks: int = 0,
        is_random: bool = False,
    ) -> None:
        super().__init__()
        if not hasattr(clip, "token_embedding"):
            raise ValueError("clipad needs a CLIP with open_clip's built-in text transformer (not an HF text tower)")
        self.clip = clip
        self.tokenizer = tokenizer
        self.is_random = is_random
        visual = clip.visual
        self.depth = len(visual.transformer.resblocks)
        self.text_depth = len(clip.transformer.resblocks)
        self.feature_layers = list(feature_layers or [self.depth // 4 * k for k in (1, 2, 3, 4)])
        if not all(1 <= layer <= self.depth for layer in self.feature_layers):
            raise ValueError(f"backbone.feature_layers {self.feature_layers} must lie in 1..{self.depth}")
        if not 0 <= vv_blocks <= self.depth:
            raise ValueError(f"backbone.vv_blocks={vv_blocks} must lie in 0..{self.depth}")
        self.vv_blocks = vv_blocks
        patch = visual.conv1.kernel_size
        self.image_size = image_size
        self.grid = (image_size // patch[0], image_size // patch[1])
        if self.grid[0] * patch[0] != image_size:
            raise ValueError(f"backbone.image_size={image_size} is not a multiple of the patch size {patch[0]}")
        with torch.no_grad():
            resized = resize_positional_embedding(visual.positional_embedding.detach(), self.grid, pos_embed_interp)
        visual.positional_embedding = nn.Parameter(resized, requires_grad=False)
        self.requires_grad_(False)
        self.eval()

    # ----------------------------------------------------------------- sizes
    @property
    def width(self) -> int:
        return self.clip.visual.conv1.out_channels

    @property
    def text_width(self) -> int:
        return self.clip.token_embedding.embedding_dim

    @property
    def embed_dim(self) -> int:
        return self.clip.visual.proj.shape[1]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    # ----------------------------------------------------------------- image tower
    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Block 0's input [B, 1 + N, width]: patch embedding, CLS, positions, ln_pre (never trained)."""
        visual = self.clip.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def encode_image(
        self,
        images: torch.Tensor,
        before_block: BlockHook | None = None,
        value_value: bool = False,
        checkpoint_blocks: bool = False,
        last_tokens: OrdinaryRows = "all",
        read_layers: bool = True,
        embedded: torch.Tensor | None = None,
    ) -> ImageFeatures:
        """Run the image tower; read the feature layers (v-v path where it runs, when asked).

        last_tokens: which positions of the ordinary path's output are wanted ("all"; "cls": only the
        pooled CLS, so the last block computes no other queries; "none": with the v-v path over the last
        block, its ordinary part is skipped). read_layers=False: no feature layers wanted.
        embedded: embed_images(images), when the caller already has it (two passes over the same images).
        """
        grad_wanted = torch.is_grad_enabled() and before_block is not None
        first_grad_block = before_block.first_block if before_block is not None else self.depth
        first_vv = self.depth - self.vv_blocks if value_value else self.depth
        n_keep = 1 + self.num_patches
        wanted = set(self.feature_layers) if read_layers else set()
        if last_tokens == "none" and first_vv == self.depth:
            raise ValueError("last_tokens='none' needs the value-value path over the last block")
        # The last block may drop ordinary positions only when no feature layer reads them there.
        last_rows = last_tokens if first_vv < self.depth or self.depth not in wanted else "all"
        x = self.embed_images(images) if embedded is None else embedded
        vv: torch.Tensor | None = None
        layer_tokens: list[torch.Tensor] = []
        for index, block in enumerate(self.clip.visual.transformer.resblocks):
            rows = last_rows if index == self.depth - 1 else "all"
            with torch.set_grad_enabled(grad_wanted and index >= first_grad_block):
                if before_block is not None:
                    x = before_block(index, x)
                if checkpoint_blocks and x.requires_grad and index < first_vv:
                    x = checkpoint(block, x, use_reentrant=False)
                elif index >= first_vv or rows != "all":
                    # The v-v path reads ln_1 of the ordinary path and keeps its own residual, no MLP.
                    x, vv = block_step(block, x, vv, value_value=index >= first_vv, rows=rows)
                else:
                    x = block(x)
            if index + 1 in wanted:
                source = vv if vv is not None else x
                layer_tokens.append(source[:, :n_keep])
        last = x[:, :n_keep] if x is not None else None
        return ImageFeatures(layer_tokens=layer_tokens, last_tokens=last, grid=self.grid)

    def project(self, tokens: torch.Tensor, layer_norm: bool = True) -> torch.Tensor:
        """Map width-d tokens into the joint embedding space: (ln_post) then proj."""
        visual = self.clip.visual
        if layer_norm:
            tokens = visual.ln_post(tokens)
        return tokens @ visual.proj

    @torch.no_grad()
    def pooled_embedding(self, images: torch.Tensor, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """ln_post(CLS) @ proj of a plain pass: CLIP's image embedding (not normalised); embedded: as in
        encode_image."""
        features = self.encode_image(images, last_tokens="cls", read_layers=False, embedded=embedded)
        return self.project(features.last_tokens[:, 0])

    # ----------------------------------------------------------------- text tower
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    @torch.no_grad()
    def _text_input(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Block 0's input [T, L, C], the causal mask [L, L] and each sentence's end-of-text index [T].

        Under the causal mask the end-of-text state never sees later positions, so the sequence is cut
        after the longest sentence's end token: same result, far less work than 77 positions.
        """
        clip = self.clip
        token_ids = token_ids.to(clip.token_embedding.weight.device)
        eot = token_ids.argmax(dim=-1)  # end-of-text has the largest id in CLIP's vocabulary
        length = int(eot.max()) + 1
        x = clip.token_embedding(token_ids[:, :length]) + clip.positional_embedding[:length]
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        return x, mask, eot

    def encode_text(self, token_ids: torch.Tensor, before_block: BlockHook | None = None) -> torch.Tensor:
        """Text embeddings [T, D] (not normalised), pooled at the end-of-text token."""
        clip = self.clip
        grad_wanted = torch.is_grad_enabled() and before_block is not None
        first_grad_block = before_block.first_block if before_block is not None else self.text_depth
        x, mask, eot = self._text_input(token_ids)
        for index, block in enumerate(clip.transformer.resblocks):
            with torch.set_grad_enabled(grad_wanted and index >= first_grad_block):
                if before_block is not None:
                    x = before_block(index, x)
                x = block(x, attn_mask=mask)
        with torch.set_grad_enabled(grad_wanted):
            x = clip.ln_final(x)
            pooled = x[torch.arange(x.shape[0], device=x.device), eot]
            return pooled @ clip.text_projection

    @torch.no_grad()
    def text_first_block(self, token_ids: torch.Tensor) -> torch.Tensor:
        """States after text block 0, [T, L, C] (L: up to the longest sentence's end). Block 0 is never
        prompted, so they depend on the sentences only."""
        x, mask, _ = self._text_input(token_ids)
        return self.clip.transformer.resblocks[0](x, attn_mask=mask)

    def encode_packed_text(self, packed: PackedText, before_block: BlockHook | None = None) -> torch.Tensor:
        """Text embeddings [R, T, D] (not normalised) of packed sentences (see clipad.backbone.packed_text),
        continuing after block 0; before_block sees the packed [R, S, C] states (the prefix first)."""
        clip = self.clip
        grad_wanted = torch.is_grad_enabled() and before_block is not None
        first_grad_block = before_block.first_block if before_block is not None else self.text_depth
        x = packed.states
        mask = additive_mask(packed.allowed, x.dtype)
        last = self.text_depth - 1
        for index, block in enumerate(clip.transformer.resblocks):
            if index == 0:
                continue
            with torch.set_grad_enabled(grad_wanted and index >= first_grad_block):
                if before_block is not None:
                    x = before_block(index, x)
                # After the last block only the end-of-text states are read.
                x = packed_block(block, x, mask, rows=packed.eot if index == last else None)
        with torch.set_grad_enabled(grad_wanted):
            if last == 0:  # a one-block tower: block 0 was the last
                x = x[torch.arange(x.shape[0], device=x.device)[:, None], packed.eot]
            return clip.ln_final(x) @ clip.text_projection  # [R, T, D]

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokenize(texts))

    def train(self, mode: bool = True) -> ClipBackbone:
        # Frozen for good: dropout/BN-free CLIP, but keep eval semantics whatever Lightning asks.
        return super().train(False)


def build_backbone(
    cfg: DictConfig,
    *,
    quick_gelu: bool,
    pos_embed_interp: str,
    vv_blocks: int = 0,
    device: str | torch.device = "cpu",
    weights_dir: str | Path = "~/.cache/clipad",
) -> ClipBackbone:
    """Create the open_clip model named by `cfg.name` with weights from a tag, a file, or random init."""
    register_clipad_models()
    if cfg.name not in open_clip.list_models():
        raise ValueError(f"backbone.name={cfg.name!r} is not an open_clip model; see open_clip.list_models()")
    pretrained: str | None = None
    cache_dir = Path(weights_dir).expanduser()
    if cfg.get("checkpoint"):
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone.checkpoint={path} does not exist: give the path of a CLIP weights file")
        pretrained = str(path)
    elif cfg.get("pretrained"):
        pretrained = resolve_pretrained(cfg.name, cfg.pretrained, cache_dir)
    elif not cfg.get("allow_random", False):
        raise ValueError(
            f"backbone {cfg.name} has no weights: set backbone.pretrained (an open_clip tag, e.g. openai), "
            "backbone.checkpoint=/path/to/file, or backbone.allow_random=true for a random backbone (tests, demo)."
        )
    if pretrained is None:
        log.warning("Backbone %s is RANDOMLY initialised: results are not comparable with the papers.", cfg.name)
    # A random backbone is drawn from its own fixed seed, so every process (DDP ranks, evaluate.py on a
    # checkpoint, which never stores the frozen backbone) rebuilds exactly the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("random_seed", 0)))
        clip = open_clip.create_model(
            cfg.name,
            pretrained=pretrained,
            force_quick_gelu=quick_gelu,
            device=device,
            cache_dir=str(cache_dir),
        )
    return ClipBackbone(
        clip,
        open_clip.get_tokenizer(cfg.name),
        image_size=cfg.image_size,
        feature_layers=cfg.get("feature_layers"),
        pos_embed_interp=pos_embed_interp,
        vv_blocks=vv_blocks,
        is_random=pretrained is None,
    )
