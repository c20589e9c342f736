"""Training-free baseline: plain CLIP, hand-made normal/abnormal prompts, patch-text similarity."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipad.data.batch import AnomalyOutput, Batch
from clipad.models.base import AnomalyModule
from clipad.models.prompt_states import ABNORMAL_STATES, NORMAL_STATES

TEMPLATES = ("a photo of a {}.", "a cropped photo of the {}.", "a close-up photo of a {}.")


class ClipBaselineModule(AnomalyModule):
    """CLIP as it is: the last layer's projected patch tokens against [normal, abnormal] text embeddings."""

    def __init__(self, cfg, device="cpu") -> None:
        super().__init__(cfg, device=device)
        self.logit_scale = float(self.cfg.model.logit_scale)
        self._text_cache: dict[str, torch.Tensor] = {}

    def text_features(self, class_name: str) -> torch.Tensor:
        """[2, D] normalised mean embeddings of the normal and abnormal sentences of a class."""
        if class_name not in self._text_cache:
            states = []
            for state_set in (NORMAL_STATES, ABNORMAL_STATES):
                sentences = [t.format(s.format(class_name)) for s in state_set for t in TEMPLATES]
                embeddings = F.normalize(self.backbone.text_embeddings(sentences), dim=-1)
                states.append(F.normalize(embeddings.mean(0), dim=-1))
            self._text_cache[class_name] = torch.stack(states)
        return self._text_cache[class_name]

    @torch.no_grad()
    def forward(self, batch: Batch) -> AnomalyOutput:
        features = self.backbone.encode_image(batch.image)
        tokens = F.normalize(self.backbone.project(features.last_tokens), dim=-1)  # [B, 1+N, D]
        text = torch.stack([self.text_features(name) for name in batch.prompt_name])  # [B, 2, D]
        probs = (self.logit_scale * tokens @ text.transpose(1, 2)).softmax(-1)[..., 1]  # [B, 1+N]
        rows, cols = features.grid
        patch_map = probs[:, 1:].reshape(-1, 1, rows, cols)
        size = batch.image.shape[-2:]
        anomaly_map = F.interpolate(patch_map, size=size, mode="bilinear", align_corners=True)[:, 0]
        return AnomalyOutput(anomaly_map=self.smooth(anomaly_map), score=probs[:, 0], raw_map=anomaly_map)
