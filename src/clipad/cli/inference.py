"""A trained model ready to score image files, shared by predict, calibrate, export and the app: the device, the
checkpoint's module, its input transform, few-shot normal prompts, the batch of loaded images and the
thresholds file's entry for the images' class."""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from clipad.calibration.thresholds import GLOBAL, ClassThreshold, read_thresholds
from clipad.cli.checkpoint import module_from_checkpoint
from clipad.cli.predict_inputs import FolderPrompts, LoadedImages
from clipad.data.batch import Batch
from clipad.data.transforms import SampleTransform
from clipad.errors import ClipadError, ConfigError
from clipad.models.base import AnomalyModule

log = logging.getLogger(__name__)
PREDICT_DATASET = "predict"  # dataset name of every image (few-shot prompts are requested under it)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_module(cfg: DictConfig, overrides: list[str], device: str) -> AnomalyModule:
    """The checkpoint's model on `device`, in eval mode (a random backbone is redrawn from its own seed)."""
    return module_from_checkpoint(cfg.ckpt_path, cfg, overrides, device=device).to(device).eval()


def model_input(module: AnomalyModule) -> SampleTransform:
    """The data pipeline's resize (Pillow bicubic) and the backbone's normalisation."""
    cfg = module.cfg.backbone
    return SampleTransform(module.backbone.image_size, list(cfg.mean), list(cfg.std))


def attach_normal_prompts(module: AnomalyModule, cfg: DictConfig, transform: SampleTransform) -> None:
    """Few-shot models get shots_dir's images as normal prompts; without shots_dir they run zero-shot."""
    few_shot = hasattr(module, "prompt_source")
    if cfg.get("shots_dir"):
        if not few_shot:
            raise ConfigError(
                f"shots_dir is for few-shot models (model=adaptclip, winclip); model={module.cfg.model.name} takes no "
                "normal prompt images: leave shots_dir out"
            )
        prompts = FolderPrompts(cfg.shots_dir, transform, cfg.get("shots"))
        module.prompt_source = prompts
        module.shots = prompts.shots
        log.info("few-shot: %d normal prompt images from %s", prompts.shots, cfg.shots_dir)
    elif few_shot:
        module.shots = 0


def batch_of(loaded: LoadedImages, class_name: str, device: str) -> Batch:
    images = loaded.images.to(device)
    count = images.shape[0]
    return Batch(
        image=images,
        mask=images.new_zeros(count, 1, *images.shape[-2:]),
        has_mask=torch.zeros(count, dtype=torch.bool, device=device),
        label=torch.zeros(count, dtype=torch.long, device=device),
        cls_name=[class_name] * count,
        prompt_name=[class_name] * count,
        dataset=[PREDICT_DATASET] * count,
        path=loaded.paths,
    )


def calibrated_threshold(cfg: DictConfig) -> tuple[ClassThreshold, str] | None:
    """The thresholds file's entry for this run's class (threshold_class, else class_name), or its global one."""
    if not cfg.get("thresholds"):
        return None
    if cfg.threshold is not None:
        raise ClipadError("give either threshold=... or thresholds=FILE, not both")
    thresholds = read_thresholds(cfg.thresholds)
    name = str(cfg.get("threshold_class") or cfg.class_name)
    chosen, key = thresholds.lookup(PREDICT_DATASET, name)
    if key == GLOBAL:
        chosen, key = thresholds.lookup_class(name)
    return chosen, f"{key} ({thresholds.describe()})"
