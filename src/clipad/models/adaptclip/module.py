"""The AdaptCLIP LightningModule: visual, textual and prompt-query adapters around a frozen CLIP.

Only the two ends learn ("CLIP as a service"): the visual adapter adapts image features against fixed
hand-made text, the textual adapter learns text context against frozen image features ("alternating"
learning: the two branches never share a gradient), and the prompt-query adapter learns heads on
query features aligned with normal prompt images. One Adam optimiser trains whichever exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from clipad.data.batch import AnomalyOutput, Batch
from clipad.losses import segmentation_loss
from clipad.models.adaptclip.fusion import FEW_SHOT_UNCLAMPED_MAP_MAX, few_shot_fusion, zero_shot_fusion
from clipad.models.adaptclip.prompt_query import PromptQueryAdapter, align_layers, alignment_map
from clipad.models.adaptclip.scoring import BranchOutput, score_against_text
from clipad.models.adaptclip.text import hand_made_text_embeddings
from clipad.models.adaptclip.textual_adapter import TextualAdapter
from clipad.models.adaptclip.visual_adapter import VisualAdapter
from clipad.models.base import AnomalyModule
from clipad.models.normal_prompts import NormalPromptSource, normal_prompt_images, rows_per_key

log = logging.getLogger(__name__)
PROMPT_CHUNK = 8  # prompt images encoded per backbone pass (bounds memory for large k)


@dataclass(frozen=True)
class AdapterChoice:
    """Which adapters exist: the `adapter` config group."""

    visual: bool
    textual: bool
    prompt_query: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AdapterChoice:
        group = cfg.get("adapter")
        if group is None:
            raise ValueError(
                "model=adaptclip needs the adapter group: adapter=all|visual|textual|visual_textual|pq (conf/adapter)"
            )
        unknown = set(group) - {"visual", "textual", "prompt_query"}
        if unknown:
            raise ValueError(
                f"adapter has unknown keys {sorted(unknown)}; allowed: visual, textual, prompt_query"
            )
        choice = cls(bool(group.visual), bool(group.textual), bool(group.prompt_query))
        if not (choice.visual or choice.textual or choice.prompt_query):
            raise ValueError("adapter: at least one of visual, textual, prompt_query must be true")
        return choice


class AdaptCLIPAdapters(nn.Module):
    """All trainable parts; absent adapters are None (their keys are absent from checkpoints)."""

    def __init__(
        self,
        embed_dim: int,
        text_width: int,
        num_layers: int,
        choice: AdapterChoice,
        context_tokens: int = 12,
        pq_context: bool = True,
    ) -> None:
        super().__init__()
        self.visual = VisualAdapter(embed_dim) if choice.visual else None
        self.textual = TextualAdapter(text_width, context_tokens) if choice.textual else None
        self.prompt_query = (
            PromptQueryAdapter(embed_dim, num_layers, pq_context) if choice.prompt_query else None
        )


@dataclass
class QueryFeatures:
    global_embedding: torch.Tensor | None  # [B, D]: ordinary CLS through proj, without ln_post (as the
    # reference); None for prompt images (never read)
    tokens: list[torch.Tensor]  # per feature layer [B, 1 + N, D]: v-v tokens through ln_post and proj

    def unit_patches(self) -> list[torch.Tensor]:
        """Per layer [B, N, D]: CLS dropped, L2-normalised (what the prompt-query alignment compares)."""
        return [F.normalize(t[:, 1:], dim=-1) for t in self.tokens]


def branch_loss(
    output: BranchOutput, label: torch.Tensor, mask: torch.Tensor, pixel_rows: torch.Tensor
) -> torch.Tensor:
    """Image cross-entropy + focal + dice (anomalous vs mask, normal vs 1 - mask), each weight 1."""
    loss = F.cross_entropy(output.logits, label)
    if bool(pixel_rows.any()):
        loss = loss + segmentation_loss(output.probs[pixel_rows], mask[pixel_rows])
    return loss


class AdaptCLIPModule(AnomalyModule):
    def __init__(self, cfg: DictConfig | dict, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, device)
        model_cfg = self.cfg.model
        self.choice = AdapterChoice.from_config(self.cfg)
        self.adapters = AdaptCLIPAdapters(
            embed_dim=self.backbone.embed_dim,
            text_width=self.backbone.text_width,
            num_layers=len(self.backbone.feature_layers),
            choice=self.choice,
            context_tokens=int(model_cfg.get("context_tokens", 12)),
            pq_context=bool(model_cfg.get("pq_context", True)),
        ).to(device)
        self.temperature = float(model_cfg.get("temperature", 0.07))
        self.value_value = bool(model_cfg.get("value_value", True))
        self.clamp_align_distance = bool(model_cfg.get("clamp_align_distance", False))
        # Evaluation settings; evaluate may change them after loading a checkpoint.
        self.shots = int(self.cfg.get("shots") or 0)
        self.few_shot_seed = int(self.cfg.get("few_shot_seed") or 0)
        if self.shots < 0:
            raise ValueError(
                f"shots={self.shots} must be 0 (zero-shot) or a positive number of normal images"
            )
        self._prompt_cache: dict[tuple, list[torch.Tensor]] = {}  # (dataset, class, shots, seed[, view])
        self.prompt_source = None
        self._hand_made_text: torch.Tensor | None = None
        self._warned_small_batch = False

    @property
    def prompt_source(self) -> NormalPromptSource | None:
        """Where the normal prompt images come from; None: the trainer's datamodule."""
        return self._prompt_source

    @prompt_source.setter
    def prompt_source(self, source: NormalPromptSource | None) -> None:
        # The cache is keyed by (dataset, class, shots, seed), which says nothing about the source:
        # features of the previous source's images must not answer for the new one's.
        self._prompt_source = source
        self.clear_prompt_cache()

    @property
    def map_upper_bound(self) -> float:
        """Few-shot maps without the clamp reach 4/3: the harmonic mean of a branch map in [0, 1] and an
        alignment map in [0, 2] (the reference's own range; see clipad.models.adaptclip.fusion)."""
        return FEW_SHOT_UNCLAMPED_MAP_MAX if self.shots > 0 and not self.clamp_align_distance else 1.0

    # ---------------------------------------------------------------- parts
    def trainable_parts(self) -> dict[str, int]:
        """Trainable parameter count per adapter (shared prompt-query heads counted once)."""
        parts = {
            "visual adapter": self.adapters.visual,
            "textual adapter": self.adapters.textual,
            "prompt-query adapter": self.adapters.prompt_query,
        }
        return {
            name: sum(p.numel() for p in part.parameters() if p.requires_grad)
            for name, part in parts.items()
            if part is not None
        }

    # ---------------------------------------------------------------- features
    @torch.no_grad()
    def features(self, images: torch.Tensor, pooled: bool = True) -> QueryFeatures:
        """pooled=False (prompt images): no global embedding, so the last block's ordinary path is skipped
        when the v-v path covers it; otherwise only its CLS query is computed."""
        backbone = self.backbone
        vv_last = self.value_value and backbone.vv_blocks > 0
        encoded = backbone.encode_image(
            images, value_value=self.value_value, last_tokens="cls" if pooled or not vv_last else "none"
        )
        return QueryFeatures(
            global_embedding=backbone.project(encoded.last_tokens[:, 0], layer_norm=False) if pooled else None,
            tokens=[backbone.project(t) for t in encoded.layer_tokens],
        )

    def hand_made_text(self) -> torch.Tensor:
        """[2, D] fixed text embeddings of the visual branch: computed once, kept out of checkpoints."""
        device = self.backbone.clip.token_embedding.weight.device
        if self._hand_made_text is None or self._hand_made_text.device != device:
            # float32 whatever autocast is active at the first call: the cache outlives that context.
            with torch.autocast(device_type=device.type, enabled=False):
                self._hand_made_text = hand_made_text_embeddings(self.backbone).float()
        return self._hand_made_text

    # ---------------------------------------------------------------- branches
    def _visual_branch(self, query: QueryFeatures, size: tuple[int, int]) -> BranchOutput:
        global_embedding, tokens = self.adapters.visual(query.global_embedding, query.tokens[-1])
        return score_against_text(
            global_embedding, tokens[:, 1:], self.hand_made_text(), self.temperature, self.backbone.grid, size
        )

    def _textual_branch(self, query: QueryFeatures, size: tuple[int, int]) -> BranchOutput:
        text = self.adapters.textual(self.backbone)
        return score_against_text(
            query.global_embedding, query.tokens[-1][:, 1:], text, self.temperature, self.backbone.grid, size
        )

    def _text_branches(self, query: QueryFeatures, size: tuple[int, int]) -> list[BranchOutput]:
        branches = []
        if self.adapters.visual is not None:
            branches.append(self._visual_branch(query, size))
        if self.adapters.textual is not None:
            branches.append(self._textual_branch(query, size))
        return branches

    # ---------------------------------------------------------------- few-shot prompts
    def prompt_memory(self, dataset: str, cls_name: str, view_id: str | None = None) -> list[torch.Tensor]:
        """Per layer [1, k * N, D]: the unit patch tokens of all k prompt images of the class, pooled.

        Computed once per (dataset, class, shots, seed) and reused for every query of the class; for a query
        with a camera view, once per (dataset, class, view, ...) from that view's prompts (the reference's).
        """
        key = (dataset, cls_name, self.shots, self.few_shot_seed) + (() if view_id is None else (view_id,))
        if key not in self._prompt_cache:
            images = normal_prompt_images(self, self.prompt_source, self.shots, dataset, cls_name, view_id)
            images = images.to(self.device)
            chunks = [self.features(chunk, pooled=False).unit_patches() for chunk in images.split(PROMPT_CHUNK)]
            layers = [torch.cat(per_layer) for per_layer in zip(*chunks, strict=True)]
            self._prompt_cache[key] = [t.reshape(1, -1, t.shape[-1]) for t in layers]
        return self._prompt_cache[key]

    def clear_prompt_cache(self) -> None:
        self._prompt_cache.clear()

    def _few_shot_parts(
        self, query: QueryFeatures, batch: Batch, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Alignment map [B, H, W] and, with the prompt-query adapter, its map [B, H, W] and score [B].

        Queries are grouped by class (and view) so that each prompt memory is matched once per batch.
        """
        grid = self.backbone.grid
        patches = query.unit_patches()
        alignment = patches[0].new_empty(len(batch), *size)
        pq_map = patches[0].new_empty(len(batch), *size) if self.adapters.prompt_query is not None else None
        pq_score = patches[0].new_empty(len(batch)) if self.adapters.prompt_query is not None else None
        views = [v or None for v in batch.view_id] if batch.view_id is not None else [None] * len(batch)
        keys = list(zip(batch.dataset, batch.cls_name, views, strict=True))
        for key, rows in rows_per_key(keys, patches[0].device):
            queries = [p[rows] for p in patches]
            aligned = align_layers(queries, self.prompt_memory(*key))
            alignment[rows] = alignment_map(aligned, grid, size, self.clamp_align_distance)
            if self.adapters.prompt_query is not None:
                outputs = self.adapters.prompt_query(queries, aligned, grid, size)
                pq_map[rows] = torch.stack([o.anomaly_map for o in outputs]).mean(dim=0)
                pq_score[rows] = torch.stack([o.score for o in outputs]).mean(dim=0)
        return alignment, pq_map, pq_score

    # ---------------------------------------------------------------- Lightning
    def forward(self, batch: Batch) -> AnomalyOutput:
        size = tuple(batch.image.shape[-2:])
        query = self.features(batch.image)
        branches = self._text_branches(query, size)
        maps = [b.anomaly_map for b in branches]
        scores = [b.score for b in branches]
        if self.shots == 0:
            return zero_shot_fusion(maps, scores, self.smooth)
        alignment, pq_map, pq_score = self._few_shot_parts(query, batch, size)
        if pq_map is not None:
            maps.append(pq_map)
            scores.append(pq_score)
        return few_shot_fusion(maps, scores, alignment, self.smooth)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if len(batch) < 2 and (self.adapters.visual is not None or self.adapters.prompt_query is not None):
            # BatchNorm1d over per-image vectors cannot train on one image: skip (e.g. a last, short batch).
            if not self._warned_small_batch:
                log.warning("AdaptCLIP skips training batches of one image (BatchNorm1d needs two or more)")
                self._warned_small_batch = True
            return None
        size = tuple(batch.image.shape[-2:])
        query = self.features(batch.image)
        mask = (batch.mask[:, 0] > 0.5).to(query.global_embedding.dtype)
        # Images without a mask give no pixel supervision unless they are normal (then the mask is all zero).
        pixel_rows = batch.has_mask | (batch.label == 0)
        terms: dict[str, torch.Tensor] = {}
        if self.adapters.visual is not None:
            terms["visual"] = branch_loss(self._visual_branch(query, size), batch.label, mask, pixel_rows)
        if self.adapters.textual is not None:
            terms["textual"] = branch_loss(self._textual_branch(query, size), batch.label, mask, pixel_rows)
        if self.adapters.prompt_query is not None:
            if batch.normal_image is None:
                raise ValueError(
                    "the prompt-query adapter trains on (query, normal image) pairs but the batch has no "
                    "normal_image: set model.pair_normal=true (the datamodule then pairs every query with a "
                    "normal image of its class)"
                )
            queries = query.unit_patches()
            # Training is 1-shot: each query's memory is its own paired normal image.
            aligned = align_layers(queries, self.features(batch.normal_image, pooled=False).unit_patches())
            outputs = self.adapters.prompt_query(queries, aligned, self.backbone.grid, size)
            terms["prompt_query"] = sum(branch_loss(o, batch.label, mask, pixel_rows) for o in outputs)
        loss = sum(terms.values())
        if not bool(torch.isfinite(loss)):
            parts = ", ".join(f"{name} {value.item()}" for name, value in terms.items())
            raise FloatingPointError(
                f"AdaptCLIP training loss is {loss.item()} ({parts}) at batch {batch_idx}, images {batch.path}. "
                "Check these inputs; with half precision use trainer.precision=bf16-mixed."
            )
        batch_size = len(batch)
        self.log("train/loss", loss, batch_size=batch_size, prog_bar=True, on_step=True, on_epoch=True)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.cfg.model.optimizer
        return torch.optim.Adam(
            [p for p in self.adapters.parameters() if p.requires_grad],
            lr=float(opt.lr),
            betas=tuple(float(b) for b in opt.betas),
        )

    def on_validation_epoch_start(self) -> None:
        self.clear_prompt_cache()
        super().on_validation_epoch_start()

    def on_test_epoch_start(self) -> None:
        self.clear_prompt_cache()
        super().on_test_epoch_start()
