"""The AnomalyCLIP LightningModule: object-agnostic learnable text prompts against frozen v-v image features.

Image side (nothing learns): v-v (DPAM) attention in the last backbone.vv_blocks blocks; local features
are the v-v tokens of the feature layers through ln_post and proj, the global feature is the ordinary
path's CLS through proj without ln_post (as the reference, issue #14). Text side: the two object-agnostic
sentences with learnable context and deep prompts. Map: p_abnormal of softmax(cos / 0.07) per patch,
upsampled, summed over the feature layers (only the last one by default: the setting of the published
numbers), then smoothed; score: the same softmax on the global feature, not fused with the map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from clipad.data.batch import AnomalyOutput, Batch
from clipad.models.adaptclip.scoring import BranchOutput, score_against_text
from clipad.models.anomalyclip.loss import anomalyclip_loss
from clipad.models.anomalyclip.prompts import ObjectAgnosticPrompts, PromptWriter, prompt_sentences
from clipad.models.base import AnomalyModule

log = logging.getLogger(__name__)


@dataclass
class ImageSide:
    global_embedding: torch.Tensor  # [B, D]
    tokens: list[torch.Tensor]  # per feature layer [B, 1 + N, D]


class AnomalyCLIPModule(AnomalyModule):
    def __init__(self, cfg: DictConfig | dict, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, device)
        model_cfg, backbone = self.cfg.model, self.backbone
        if self.cfg.backbone.get("feature_layers") is None:
            # The published numbers use layer 24 alone (author, issue #82), not the backbone's default four.
            backbone.feature_layers = [backbone.depth]
        self.prompts = ObjectAgnosticPrompts(
            backbone.text_width,
            context_tokens=int(model_cfg.context_tokens),
            depth=self._deep_prompt_depth(int(model_cfg.deep_prompt_depth)),
            length=int(model_cfg.deep_prompt_length),
        ).to(device)
        self.temperature = float(model_cfg.temperature)
        self.segmentation_weight = float(model_cfg.segmentation_weight)
        self.round_deep_to_fp16 = bool(model_cfg.get("round_deep_prompts_fp16", False))
        self.sentence_token_ids = self._sentence_tokens()  # [2, 77]: normal, anomalous
        self._text_cache: torch.Tensor | None = None

    def _deep_prompt_depth(self, depth: int) -> int:
        """The configured depth, capped at the text tower's depth (e.g. the tiny test backbone's 4 blocks)."""
        blocks = self.backbone.text_depth
        if depth > blocks:
            log.warning("model.deep_prompt_depth=%d exceeds the text tower's %d blocks: deep prompts enter "
                        "blocks 1..%d only (%d prompts)", depth, blocks, blocks - 1, blocks - 1)
        return min(depth, blocks)

    def _sentence_tokens(self) -> torch.Tensor:
        tokens = self.backbone.tokenize(list(prompt_sentences(self.prompts.context_tokens)))
        n = self.prompts.context_tokens
        # start, n placeholders, "object", "." -> end-of-text at n + 3 (n + 4 with "damaged")
        if tokens.argmax(dim=-1).tolist() != [n + 3, n + 4]:
            raise ValueError(f"the tokenizer does not turn {prompt_sentences(n)} into one token per word")
        return tokens

    # ---------------------------------------------------------------- parts
    def trainable_parts(self) -> dict[str, int]:
        return {
            "context tokens": self.prompts.ctx_normal.numel() + self.prompts.ctx_anomalous.numel(),
            "deep text prompts": sum(p.numel() for p in self.prompts.deep),
        }

    @property
    def map_upper_bound(self) -> float:
        """Maps are summed over the feature layers, as the reference: each layer adds at most 1."""
        return float(len(self.backbone.feature_layers))

    # ---------------------------------------------------------------- features
    def text_features(self) -> torch.Tensor:
        """[2, D] unit (normal, anomalous) text embeddings; cached while evaluating (no grad, eval mode)."""
        caching = not self.training and not torch.is_grad_enabled()
        if caching and self._text_cache is not None:
            return self._text_cache
        hook = PromptWriter(self.prompts, self.backbone.clip.positional_embedding, self.round_deep_to_fp16)
        text = F.normalize(self.backbone.encode_text(self.sentence_token_ids, before_block=hook).float(), dim=-1)
        if caching:
            self._text_cache = text
        return text

    def clear_text_cache(self) -> None:
        self._text_cache = None

    @torch.no_grad()
    def image_side(self, images: torch.Tensor) -> ImageSide:
        encoded = self.backbone.encode_image(images, value_value=True)
        return ImageSide(
            global_embedding=self.backbone.project(encoded.last_tokens[:, 0], layer_norm=False),
            tokens=[self.backbone.project(t) for t in encoded.layer_tokens],
        )

    def layer_outputs(self, images: torch.Tensor) -> list[BranchOutput]:
        """Per feature layer: upsampled patch probabilities [B, 2, H, W] and the global logits [B, 2]."""
        size = tuple(images.shape[-2:])
        image, text = self.image_side(images), self.text_features()
        return [score_against_text(image.global_embedding, tokens[:, 1:], text, self.temperature,
                                   self.backbone.grid, size) for tokens in image.tokens]

    # ---------------------------------------------------------------- Lightning
    def forward(self, batch: Batch) -> AnomalyOutput:
        outputs = self.layer_outputs(batch.image)
        # (p_abnormal + 1 - p_normal) / 2 is p_abnormal (issue #68); summed over layers as the reference.
        raw = torch.stack([o.probs[:, 1] for o in outputs]).sum(dim=0)
        return AnomalyOutput(anomaly_map=self.smooth(raw), score=outputs[0].score, raw_map=raw)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.clear_text_cache()
        outputs = self.layer_outputs(batch.image)
        mask = (batch.mask[:, 0] > 0.5).to(outputs[0].probs.dtype)
        # Without a mask only normal images give pixel supervision (all-zero mask); the others: image loss only.
        pixel_rows = batch.has_mask | (batch.label == 0)
        segmentation, image = anomalyclip_loss(outputs, batch.label, mask, pixel_rows, self.segmentation_weight)
        loss = segmentation + image
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"AnomalyCLIP training loss is {loss.item()} at batch {batch_idx}, "
                                     f"images {batch.path}")
        size = len(batch)
        self.log("train/loss", loss, batch_size=size, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/loss_segmentation", segmentation, batch_size=size, on_step=False, on_epoch=True)
        self.log("train/loss_image", image, batch_size=size, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.cfg.model.optimizer
        return torch.optim.Adam(self.prompts.parameters(), lr=float(opt.lr),
                                betas=tuple(float(b) for b in opt.betas))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.clear_text_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_validation_epoch_start(self) -> None:
        self.clear_text_cache()
        super().on_validation_epoch_start()

    def on_test_epoch_start(self) -> None:
        self.clear_text_cache()
        super().on_test_epoch_start()

    def on_predict_epoch_start(self) -> None:
        self.clear_text_cache()
