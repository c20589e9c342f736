"""The WinCLIP LightningModule: training-free; shots=0 is WinCLIP, shots=k is WinCLIP+.

Nothing learns (0 trainable parameters, no optimiser): train.py only tests it, as the plain-CLIP baseline.
The text embeddings per class and the normal memory per (dataset, class, shots, seed) are computed once and
cached, never stored in checkpoints (a checkpoint holds the config alone).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from clipad.data.batch import AnomalyOutput, Batch
from clipad.errors import ConfigError
from clipad.models.base import AnomalyModule
from clipad.models.normal_prompts import NormalPromptSource, normal_prompt_images, rows_per_key
from clipad.models.winclip.features import WinCLIPFeatures, WindowEncoder
from clipad.models.winclip.scoring import NormalMemory, few_shot_map, zero_shot_scores
from clipad.models.winclip.text import state_text_embeddings

REFERENCE_CHUNK = 8  # reference images encoded per pass when the memory is built (bounds memory for large k)


class WinCLIPModule(AnomalyModule):
    def __init__(self, cfg: DictConfig | dict, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, device)
        model_cfg = self.cfg.model
        scales = tuple(int(s) for s in model_cfg.get("scales", (2, 3)))
        self.encoder = WindowEncoder(self.backbone, scales, int(model_cfg.get("window_batch", 1024)))
        self.temperature = float(model_cfg.get("temperature", 0.07))
        self.shots = int(self.cfg.get("shots") or 0)
        self.few_shot_seed = int(self.cfg.get("few_shot_seed") or 0)
        if self.shots < 0:
            raise ConfigError(f"shots={self.shots} must be 0 (WinCLIP) or a number of normal images (WinCLIP+)")
        self._text_cache: dict[str, torch.Tensor] = {}
        self._memory_cache: dict[tuple[str, str, int, int], NormalMemory] = {}
        self.prompt_source = None

    # ---------------------------------------------------------------- text and memory
    @property
    def prompt_source(self) -> NormalPromptSource | None:
        """Where the k normal reference images come from; None: the trainer's datamodule."""
        return self._prompt_source

    @prompt_source.setter
    def prompt_source(self, source: NormalPromptSource | None) -> None:
        self._prompt_source = source  # the memory cache does not know the source: a new source empties it
        self._memory_cache.clear()

    def text_features(self, class_name: str) -> torch.Tensor:
        """[2, D] unnormalised (normal, anomalous) ensemble embeddings of a class, float32, cached."""
        if class_name not in self._text_cache:
            device = self.backbone.clip.token_embedding.weight.device
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                self._text_cache[class_name] = state_text_embeddings(self.backbone, class_name).float()
        return self._text_cache[class_name]

    def normal_memory(self, dataset: str, cls_name: str) -> NormalMemory:
        """The class's window and patch memory from its k reference images, built once per draw."""
        key = (dataset, cls_name, self.shots, self.few_shot_seed)
        if key not in self._memory_cache:
            images = normal_prompt_images(self, self.prompt_source, self.shots, dataset, cls_name).to(self.device)
            features = WinCLIPFeatures.concatenate([self.encoder(chunk) for chunk in images.split(REFERENCE_CHUNK)])
            self._memory_cache[key] = NormalMemory.from_features(features)
        return self._memory_cache[key]

    def clear_memory_cache(self) -> None:
        self._memory_cache.clear()

    # ---------------------------------------------------------------- forward
    def _few_shot_maps(self, features: WinCLIPFeatures, batch: Batch) -> torch.Tensor:
        """[B, N]; the queries of each (dataset, class) are matched against that class's memory at once.
        One key for a whole batch (e.g. the ONNX graph's single class name) covers every image."""
        keys = list(zip(batch.dataset, batch.cls_name, strict=True))
        if len(set(keys)) == 1:
            return few_shot_map(features, self.normal_memory(*keys[0]), self.encoder.indices)
        maps = features.patches.new_empty(features.patches.shape[:2])
        for key, rows in rows_per_key(keys, maps.device):
            maps[rows] = few_shot_map(features.select(rows), self.normal_memory(*key), self.encoder.indices)
        return maps

    @torch.no_grad()
    def forward(self, batch: Batch) -> AnomalyOutput:
        features = self.encoder(batch.image)
        text = torch.stack([self.text_features(name) for name in batch.prompt_name]).to(features.image)
        score, patch_map = zero_shot_scores(features, text, self.encoder.indices, self.temperature)
        if self.shots > 0:
            visual_map = self._few_shot_maps(features, batch)
            patch_map = (patch_map + visual_map) / 2
            score = (score + visual_map.amax(dim=1)) / 2
        rows, cols = self.backbone.grid
        size = tuple(batch.image.shape[-2:])
        raw_map = F.interpolate(patch_map.reshape(-1, 1, rows, cols), size=size, mode="bilinear",
                                align_corners=False)[:, 0]
        return AnomalyOutput(anomaly_map=self.smooth(raw_map), score=score, raw_map=raw_map)

    def on_test_epoch_start(self) -> None:
        self.clear_memory_cache()
        super().on_test_epoch_start()

    def on_validation_epoch_start(self) -> None:
        self.clear_memory_cache()
        super().on_validation_epoch_start()
