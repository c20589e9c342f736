"""Test-time callback: heatmap figures for the first few images of every class (and W&B panels)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from clipad.data.batch import AnomalyOutput, Batch
from clipad.report.heatmaps import denormalise, save_heatmap_figure


class HeatmapWriter(L.Callback):
    def __init__(self, per_class: int = 4, scaling: str = "per_image") -> None:
        self.per_class = per_class
        self.scaling = scaling
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.written: list[Path] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counts.clear()
        self.written = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero or self.per_class <= 0 or not isinstance(outputs, AnomalyOutput):
            return
        cfg = pl_module.cfg
        out_dir = Path(cfg.paths.output_dir) / "heatmaps"
        for i in range(len(batch)):
            key = (batch.dataset[i], batch.cls_name[i])
            label = int(batch.label[i])
            # Half normal, half anomalous images per class, so both kinds of map can be compared.
            quota = self.per_class // 2 if label == 0 else self.per_class - self.per_class // 2
            if self.counts[(*key, label)] >= quota:
                continue
            self.counts[(*key, label)] += 1
            image = denormalise(batch.image[i].float(), list(cfg.backbone.mean), list(cfg.backbone.std))
            mask = batch.mask[i, 0].float().cpu().numpy() if bool(batch.has_mask[i]) else None
            score = float(outputs.score[i])
            source = Path(batch.path[i].split("#", 1)[0])
            path = out_dir / key[0] / key[1] / f"{source.parent.name}_{source.stem}.png"
            self.written.append(save_heatmap_figure(
                path, image, outputs.anomaly_map[i].float().cpu().numpy(), mask,
                title=f"{key[0]}/{key[1]}  {source.parent.name}/{source.name}  "
                      f"({'anomalous' if label else 'normal'}, score {score:.3f})",
                scaling=self.scaling,
            ))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.written:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="test/heatmaps", images=[str(p) for p in self.written],
                                 caption=[f"{p.parent.parent.name}/{p.parent.name}/{p.stem}" for p in self.written])
