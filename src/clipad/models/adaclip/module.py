"""AdaCLIPModule: hybrid learnable prompts on a frozen CLIP, trained on auxiliary anomaly data.

Per feature layer, projected patch tokens are compared with a [normal, abnormal] text embedding
(logit scale 100); the image score compares the CLS embedding, fused with the most anomalous patches
(hybrid semantic fusion), with the same text embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from clipad.backbone.packed_text import PackedSentences, pack_rows
from clipad.data.batch import AnomalyOutput, Batch
from clipad.losses import focal_loss, segmentation_loss
from clipad.models.adaclip.heads import ClsProjection, PatchProjections
from clipad.models.adaclip.hsf import HybridSemanticFusion
from clipad.models.adaclip.prompts import (
    DynamicPromptGenerator,
    ImagePromptHook,
    StaticPrompts,
    TextPromptHook,
)
from clipad.models.adaclip.text import NUM_NORMAL_SENTENCES, state_sentences
from clipad.models.base import AnomalyModule

PROMPT_TYPES = {
    "hybrid": (True, True),
    "static": (True, False),
    "dynamic": (False, True),
    "none": (False, False),
}
BRANCHES = ("V", "L", "VL")


@dataclass(frozen=True)
class PromptSettings:
    """Which learnable prompts exist, read from the `prompt` config group."""

    static: bool
    dynamic: bool
    image: bool  # prompts enter the image tower
    text: bool  # prompts enter the text tower
    length: int
    depth: int

    @classmethod
    def from_config(cls, cfg: DictConfig, image_depth: int, text_depth: int) -> PromptSettings:
        if cfg.type not in PROMPT_TYPES:
            raise ValueError(f"prompt.type={cfg.type!r}: choose one of {sorted(PROMPT_TYPES)}")
        if cfg.branch not in BRANCHES:
            raise ValueError(f"prompt.branch={cfg.branch!r}: choose one of {BRANCHES}")
        static, dynamic = PROMPT_TYPES[cfg.type]
        prompted = static or dynamic
        settings = cls(
            static=static,
            dynamic=dynamic,
            image=prompted and "V" in cfg.branch,
            text=prompted and "L" in cfg.branch,
            length=int(cfg.length),
            depth=int(cfg.depth),
        )
        if prompted and settings.length < 1:
            raise ValueError(f"prompt.length={settings.length} must be >= 1")
        if settings.image and not 1 <= settings.depth <= image_depth:
            raise ValueError(
                f"prompt.depth={settings.depth} must lie in 1..{image_depth} (image tower blocks)"
            )
        if settings.text and not 2 <= settings.depth <= text_depth:
            raise ValueError(
                f"prompt.depth={settings.depth} must lie in 2..{text_depth} with text prompts: they enter "
                "text blocks 1..depth-1 (block 0 is never prompted). Use a larger depth or prompt.branch=V."
            )
        return settings


@dataclass
class Similarities:
    layer_logits: list[torch.Tensor]  # per feature layer [B, N, 2] (normal, abnormal), before upsampling
    image_logits: torch.Tensor  # [B, 2]
    grid: tuple[int, int]


def full_precision(device: torch.device) -> torch.autocast:
    """A region where autocast is off (the caller's float32 tensors stay float32)."""
    return torch.autocast(device_type=device.type, enabled=False)


class AdaCLIPModule(AnomalyModule):
    """AdaCLIP on the frozen backbone; trainable: the prompts of `cfg.prompt` and the projections."""

    def __init__(self, cfg: DictConfig | dict, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, device)
        if self.cfg.get("prompt") is None:
            raise ValueError(
                "the config has no `prompt` group: compose it with model=adaclip (its defaults select it)"
            )
        model_cfg, backbone = self.cfg.model, self.backbone
        self.prompt_settings = p = PromptSettings.from_config(
            self.cfg.prompt, backbone.depth, backbone.text_depth
        )

        # Optional parts are None when the prompt type/branch does not use them: no dead parameters.
        self.image_static_prompts = (
            StaticPrompts(p.depth, p.length, backbone.width, device) if p.image and p.static else None
        )
        # Text prompts enter blocks 1..J-1 only: tokens[j] is used before text block j + 1.
        self.text_static_prompts = (
            StaticPrompts(p.depth - 1, p.length, backbone.text_width, device) if p.text and p.static else None
        )
        self.image_prompt_generator = (
            DynamicPromptGenerator(backbone.embed_dim, p.length, backbone.width, device)
            if p.image and p.dynamic
            else None
        )
        self.text_prompt_generator = (
            DynamicPromptGenerator(backbone.embed_dim, p.length, backbone.text_width, device)
            if p.text and p.dynamic
            else None
        )
        self.patch_projections = PatchProjections(
            len(backbone.feature_layers), backbone.width, backbone.embed_dim, device
        )
        self.cls_projection = ClsProjection(backbone.embed_dim, device)

        hsf = model_cfg.hsf
        self.fusion = (
            HybridSemanticFusion(
                variant=hsf.variant,
                clusters=int(hsf.clusters),
                top_k_factor=int(hsf.top_k_factor),
                iters=int(hsf.get("kmeans_iters", 30)),
                seed=int(model_cfg.seed),
            )
            if hsf.enabled
            else None
        )
        self.fusion_alpha = float(hsf.alpha)
        self.logit_scale = float(model_cfg.logit_scale)
        self._sentence_tokens: dict[str, torch.Tensor] = {}
        self._text_cache: dict[str, torch.Tensor] = {}
        self._text_cache_key: tuple = ()
        self._packed_sentences: dict[tuple, PackedSentences] = {}

    # ---------------------------------------------------------------- parts
    def trainable_parts(self) -> dict[str, int]:
        """Trainable parameter count per part, in the order of the reference sheet's table."""
        parts = {
            "static image prompts": self.image_static_prompts,
            "static text prompts": self.text_static_prompts,
            "dynamic image generator": self.image_prompt_generator,
            "dynamic text generator": self.text_prompt_generator,
            "patch projections": self.patch_projections,
            "CLS projection": self.cls_projection,
        }
        return {
            name: sum(t.numel() for t in part.parameters() if t.requires_grad)
            for name, part in parts.items()
            if part is not None
        }

    # ---------------------------------------------------------------- text side
    def _sentences(self, name: str) -> torch.Tensor:
        """Token ids of the class's 28 normal then 20 abnormal sentences (a pure function of the name)."""
        if name not in self._sentence_tokens:
            normal, abnormal = state_sentences(name)
            tokens = self.backbone.tokenize(normal + abnormal)
            end = tokens.argmax(dim=-1)  # end-of-text has the largest id
            if self.prompt_settings.text and int(end.min()) <= self.prompt_settings.length:
                sentence = (normal + abnormal)[int(end.argmin())]
                raise ValueError(
                    f"prompt.length={self.prompt_settings.length} would overwrite the end-of-text token of "
                    f"{sentence!r}: text prompts replace positions 1..length; "
                    f"use prompt.length <= {int(end.min()) - 1}"
                )
            self._sentence_tokens[name] = tokens
        return self._sentence_tokens[name]

    def _encode_sentences(self, names: list[str], dynamic: torch.Tensor | None) -> torch.Tensor:
        """[len(names), 2, D] normalised (normal, abnormal) features; dynamic: [len(names), M, C] or None.

        All sentences of all names go through the text tower in one call.
        """
        if self.prompt_settings.text:
            embeddings = self._encode_prompted_sentences(names, dynamic).float()
        else:
            tokens = torch.cat([self._sentences(name) for name in names])
            embeddings = self.backbone.encode_text(tokens).float().unflatten(0, (len(names), -1))
        embeddings = F.normalize(embeddings, dim=-1)
        normal = F.normalize(embeddings[:, :NUM_NORMAL_SENTENCES].mean(dim=1), dim=-1)
        abnormal = F.normalize(embeddings[:, NUM_NORMAL_SENTENCES:].mean(dim=1), dim=-1)
        return torch.stack([normal, abnormal], dim=1)

    def _encode_prompted_sentences(self, names: list[str], dynamic: torch.Tensor | None) -> torch.Tensor:
        """[len(names), T, D] with text prompts: one packed row per name (see clipad.backbone.packed_text).

        Positions 0..M (start-of-text, then the prompt tokens written before blocks 1..J-1) see only each
        other, so they are the same in all sentences of a row: computed once per row, not once per sentence;
        later positions once per distinct token prefix (a token tree).
        """
        packed = pack_rows([self._packed_first_block(name) for name in names])
        p = self.prompt_settings
        hook = TextPromptHook(self.text_static_prompts, dynamic, p.depth, p.length)
        return self.backbone.encode_packed_text(packed, before_block=hook)

    def _packed_first_block(self, name: str) -> PackedSentences:
        """Block-0 states of the class's sentences as a token tree (block 0 is never prompted: cached per name).

        The key holds what changes the tensor or its use: device, autocast (bf16 block 0 differs) and
        inference mode (its tensors cannot enter a training step's graph).
        """
        device = self._text_device()
        key = (name, device, torch.is_autocast_enabled(device.type), torch.is_inference_mode_enabled())
        if key not in self._packed_sentences:
            tokens = self._sentences(name)
            states = self.backbone.text_first_block(tokens)
            self._packed_sentences[key] = PackedSentences.build(states, tokens, prefix=1 + self.prompt_settings.length)
        return self._packed_sentences[key]

    def text_features(self, names: list[str], plain_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 2, D] text features for each image's class name.

        Dynamic text prompts make them depend on the image: computed per image (plain_embedding [B, D]).
        Otherwise they depend on the class name only: computed once per distinct name in the batch, and
        cached while no gradients are recorded (the cache is dropped when a text parameter changes);
        cached features are computed in float32 whatever the trainer's precision (once per class: cheap).
        """
        if self.text_prompt_generator is not None:
            if plain_embedding is None:
                raise ValueError("dynamic text prompts need the images' plain CLIP embedding")
            return self._encode_sentences(names, self.text_prompt_generator(plain_embedding))
        unique = list(dict.fromkeys(names))
        if self.prompt_settings.text and torch.is_grad_enabled():
            per_class = self._encode_sentences(unique, None)
        else:
            self._refresh_text_cache()
            missing = [name for name in unique if name not in self._text_cache]
            if missing:
                with full_precision(self._text_device()):
                    features = self._encode_sentences(missing, None)
                self._text_cache.update(zip(missing, features, strict=True))
            per_class = torch.stack([self._text_cache[name] for name in unique])
        index = torch.tensor([unique.index(name) for name in names], device=per_class.device)
        return per_class[index]

    def _refresh_text_cache(self) -> None:
        """Drop the cache when a text prompt changed (optimizer step, load_state_dict) or the device did.

        Inference mode is part of the key: tensors made under it (Lightning's validation) cannot be saved
        for backward, so a training step must not reuse them.
        """
        params = self.text_static_prompts.parameters() if self.text_static_prompts is not None else ()
        key = (
            self._text_device(),
            torch.is_inference_mode_enabled(),
            tuple((id(t), t._version) for t in params),
        )
        if key != self._text_cache_key:
            self._text_cache = {}
            self._text_cache_key = key

    def _text_device(self) -> torch.device:
        return self.backbone.clip.token_embedding.weight.device

    # ---------------------------------------------------------------- image side
    def _similarities(self, images: torch.Tensor, names: list[str]) -> Similarities:
        p, backbone = self.prompt_settings, self.backbone
        plain = None  # pooled embedding of an unprompted pass: the dynamic prompt generators' input
        hook = None
        embedded = backbone.embed_images(images)  # the same for the plain and the prompted pass
        if p.image:
            if p.dynamic:
                plain = backbone.pooled_embedding(images, embedded=embedded)
            dynamic = self.image_prompt_generator(plain) if self.image_prompt_generator is not None else None
            hook = ImagePromptHook(self.image_static_prompts, dynamic, p.depth, p.length)
        checkpointing = bool(self.cfg.backbone.get("checkpoint_blocks", False)) and self.training
        features = backbone.encode_image(images, before_block=hook, checkpoint_blocks=checkpointing,
                                         embedded=embedded)
        pooled = backbone.project(features.last_tokens[:, 0])
        if plain is None and self.text_prompt_generator is not None:
            plain = pooled.detach()  # no image prompts: this pass already is the plain one
        text = self.text_features(names, plain)
        patch_tokens = self.patch_projections([tokens[:, 1:] for tokens in features.layer_tokens])
        cls_embedding = self.cls_projection(pooled)
        # Cosine similarities x 100 lose about 0.4 logits in bf16: heads, maps and losses run in float32.
        with full_precision(images.device):
            return self._score(patch_tokens, cls_embedding, text, features.grid)

    def _score(
        self,
        patch_tokens: list[torch.Tensor],
        cls_embedding: torch.Tensor,
        text: torch.Tensor,
        grid: tuple[int, int],
    ) -> Similarities:
        text_t = text.float().transpose(1, 2)  # [B, D, 2]
        patch_tokens = [tokens.float() for tokens in patch_tokens]
        layer_logits = [self.logit_scale * tokens @ text_t for tokens in patch_tokens]
        embedding = cls_embedding.float()
        if self.fusion is not None:
            patch_scores = torch.stack(layer_logits).mean(dim=0).softmax(dim=-1)[..., 1]
            fused = self.fusion(patch_tokens, patch_scores)
            embedding = F.normalize(self.fusion_alpha * fused + (1.0 - self.fusion_alpha) * embedding, dim=-1)
        image_logits = self.logit_scale * (embedding.unsqueeze(1) @ text_t).squeeze(1)
        return Similarities(layer_logits=layer_logits, image_logits=image_logits, grid=grid)

    @staticmethod
    def _upsample(logits: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """[B, N, 2] patch logits -> [B, 2, H, W] (bilinear, align_corners=True as the reference)."""
        # contiguous: the transposed view would be taken for channels-last, whose bilinear kernel is slower
        maps = logits.transpose(1, 2).unflatten(2, grid).contiguous()
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)

    # ---------------------------------------------------------------- Lightning
    def forward(self, batch: Batch) -> AnomalyOutput:
        """Test-time output: the layers' logits are averaged before the softmax; the map is p(abnormal)."""
        result = self._similarities(batch.image, batch.prompt_name)
        with full_precision(batch.image.device):
            mean_logits = torch.stack(result.layer_logits).mean(dim=0)
            maps = self._upsample(mean_logits, result.grid, tuple(batch.image.shape[-2:]))
            raw_map = maps.softmax(dim=1)[:, 1]
            return AnomalyOutput(anomaly_map=self.smooth(raw_map), score=result.image_logits.softmax(dim=-1)[:, 1],
                                 raw_map=raw_map)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        result = self._similarities(batch.image, batch.prompt_name)
        with full_precision(batch.image.device):
            segmentation, classification = self._losses(result, batch)
        loss = segmentation + classification
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"AdaCLIP training loss is {loss.item()} (segmentation {segmentation.item()}, "
                f"classification {classification.item()}) at batch {batch_idx}, images {batch.path}. "
                "Check these inputs; with half precision use trainer.precision=bf16-mixed "
                "(fp16 needs a GradScaler)."
            )
        batch_size = len(batch)
        self.log("train/loss", loss, batch_size=batch_size, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/loss_segmentation", segmentation, batch_size=batch_size, on_step=False, on_epoch=True)
        self.log(
            "train/loss_classification", classification, batch_size=batch_size, on_step=False, on_epoch=True
        )
        return loss

    def _losses(self, result: Similarities, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer focal + 2 dice on the upsampled maps, summed over layers; focal on image probs."""
        size = tuple(batch.image.shape[-2:])
        mask = (batch.mask[:, 0] > 0.5).float()
        # Images without a mask give no pixel supervision unless they are normal (then the mask is all zero).
        pixel_rows = batch.has_mask | (batch.label == 0)
        segmentation = result.image_logits.new_zeros(())
        if bool(pixel_rows.any()):
            for logits in result.layer_logits:
                probs = self._upsample(logits, result.grid, size).softmax(dim=1)
                segmentation = segmentation + segmentation_loss(probs[pixel_rows], mask[pixel_rows])
        classification = focal_loss(result.image_logits.softmax(dim=-1), batch.label)
        return segmentation, classification

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.cfg.model.optimizer
        return torch.optim.AdamW(
            [t for t in self.parameters() if t.requires_grad],
            lr=float(opt.lr),
            betas=tuple(float(b) for b in opt.betas),
            weight_decay=float(opt.weight_decay),
        )
