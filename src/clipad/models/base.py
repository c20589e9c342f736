"""The base LightningModule: a frozen CLIP backbone and the evaluation loop every method shares."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from clipad.backbone import ClipBackbone, build_backbone
from clipad.data.batch import AnomalyOutput, Batch
from clipad.models.smoothing import gaussian_smooth
from clipad.report.image_scores import ImageScore, gather_image_scores

log = logging.getLogger(__name__)
REFERENCE_SIZE = 518  # both papers smooth with sigma 4 at 518 px


def backbone_from_config(cfg: DictConfig, device: str | torch.device = "cpu") -> ClipBackbone:
    """Build the backbone with each model's reference defaults where the backbone config leaves them open."""
    bcfg, mcfg = cfg.backbone, cfg.model

    def pick(key: str, default: Any) -> Any:
        value = bcfg.get(key)
        return value if value is not None else mcfg.get(key, default)

    return build_backbone(
        bcfg,
        quick_gelu=bool(pick("quick_gelu", False)),
        pos_embed_interp=pick("pos_embed_interp", "bicubic"),
        vv_blocks=int(bcfg.get("vv_blocks") or 0) if mcfg.get("value_value", False) else 0,
        device=device,
        weights_dir=cfg.paths.weights_dir,
    )


class AnomalyModule(L.LightningModule):
    """Frozen backbone (eval mode, no grad, kept out of checkpoints) + shared validation/test loop.

    Subclasses implement `forward(batch) -> AnomalyOutput` (maps already smoothed with `self.smooth`)
    and, if trainable, `training_step` and `configure_optimizers`.
    """

    def __init__(self, cfg: DictConfig | dict, device: str | torch.device = "cpu") -> None:
        super().__init__()
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        # Plain containers only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.cfg = OmegaConf.create(self.hparams["cfg"])
        self.backbone = backbone_from_config(self.cfg, device=device)
        self.smoothing_sigma = float(self.cfg.model.get("smoothing_sigma", 4.0)) * self.backbone.image_size / REFERENCE_SIZE
        self.stage_results: dict[str, Any] = {}
        self.stage_image_scores: dict[str, list[ImageScore]] = {}  # per stage: every image's score, all ranks
        self._image_records: dict[str, list[ImageScore]] = {}
        # calibrated thresholds (clipad.calibration.thresholds): the test table gets a decisions section
        self.decision_thresholds = None

    # ---------------------------------------------------------------- model interface
    def forward(self, batch: Batch) -> AnomalyOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        return gaussian_smooth(maps, self.smoothing_sigma)

    @property
    def is_trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    # ---------------------------------------------------------------- frozen backbone
    def train(self, mode: bool = True) -> AnomalyModule:
        super().train(mode)
        self.backbone.eval()
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Trainable parameters and buffers (BatchNorm statistics) only: never the frozen CLIP."""
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        return type(full)((k, v) for k, v in full.items() if not k.startswith(prefix + "backbone."))

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"checkpoint does not match {type(self).__name__}: missing {missing}, "
                f"unexpected {result.unexpected_keys}"
            )
        return result

    # ---------------------------------------------------------------- evaluation loop
    def _start_stage(self, stage: str) -> None:
        from clipad.metrics.evaluator import AnomalyMetrics

        datamodule = self.trainer.datamodule
        thresholds = self.decision_thresholds if stage == "test" else None
        options = datamodule.metric_options() if hasattr(datamodule, "metric_options") else {}
        metrics = AnomalyMetrics(domains=datamodule.domains, thresholds=thresholds, **options)
        setattr(self, f"{stage}_metrics", metrics.to(self.device))
        self._image_records[stage] = []

    @property
    def map_upper_bound(self) -> float:
        """The largest value this model's anomaly maps can take (1: the AnomalyOutput contract)."""
        return 1.0

    def _evaluate_step(self, stage: str, batch: Batch) -> AnomalyOutput:
        output = self(batch)
        getattr(self, f"{stage}_metrics").update(
            score=output.score.detach().float(),
            label=batch.label,
            # A fixed positive factor brings a wider map range into the metrics' [0, 1] without changing any
            # metric (all are threshold sweeps); 1 for every model but unclamped few-shot AdaptCLIP.
            anomaly_map=output.anomaly_map.detach().float() / self.map_upper_bound,
            mask=batch.mask[:, 0] > 0.5,
            has_mask=batch.has_mask,
            dataset=batch.dataset,
            cls_name=batch.cls_name,
            view_sample_id=batch.view_sample_id,
            defect_type=batch.defect_type,
        )
        self._image_records[stage].extend(
            ImageScore(dataset=d, cls_name=c, path=p, label=int(y), score=float(s))
            for d, c, p, y, s in zip(batch.dataset, batch.cls_name, batch.path, batch.label.tolist(),
                                     output.score.detach().float().cpu().tolist())
        )
        return output

    def _finish_stage(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        table = metrics.compute()
        metrics.reset()
        self.stage_results[stage] = table
        self.stage_image_scores[stage] = gather_image_scores(self._image_records.pop(stage, []))
        summary = table.summary(prefix=stage)
        if self.trainer.sanity_checking:
            return
        means = table.class_means()
        for name, value in means.items():
            summary[f"{stage}/{name}"] = value
        loggable = {k: float(v) for k, v in summary.items() if v == v}  # drop NaN (missing metrics)
        self.log_dict(loggable, sync_dist=False, rank_zero_only=True)

    def on_validation_epoch_start(self) -> None:
        self._start_stage("val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_stage("val")

    def on_test_epoch_start(self) -> None:
        self._start_stage("test")

    def test_step(self, batch: Batch, batch_idx: int) -> AnomalyOutput:
        return self._evaluate_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._finish_stage("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> AnomalyOutput:
        return self(batch)
