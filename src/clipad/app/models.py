"""The app's models: each checkpoint loaded once at start-up, with what the page needs to know about it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from clipad.calibration.thresholds import ClassThreshold
from clipad.cli.checkpoint import describe_model, read_checkpoint
from clipad.cli.inference import attach_normal_prompts, calibrated_threshold, load_module, model_input
from clipad.data.transforms import SampleTransform
from clipad.models.base import AnomalyModule

DEFAULT_THRESHOLD = 0.5  # the sliders' start without a thresholds file or threshold=


@dataclass
class AppModel:
    label: str  # "A" or "B": column and file names
    ckpt_path: Path
    module: AnomalyModule
    transform: SampleTransform
    device: str
    cfg: DictConfig  # the app's config with this model's thresholds file under `thresholds`
    classes: list[str]  # the object names the checkpoint knows (checkpoint_classes)

    @property
    def few_shot(self) -> bool:
        return hasattr(self.module, "prompt_source")

    @property
    def description(self) -> str:
        note = ", random backbone: its scores say nothing about the method" if self.module.backbone.is_random else ""
        return f"{self.label}: {self.ckpt_path.name}, {describe_model(self.module.cfg)}{note}"

    def start_thresholds(self, class_name: str) -> tuple[float, float, bool, str]:
        """(image threshold, pixel threshold, calibrated, where they came from) for `class_name`."""
        cfg = self.cfg.copy()
        OmegaConf.set_struct(cfg, False)
        cfg.class_name = class_name
        if not cfg.get("threshold_class"):
            cfg.threshold_class = class_name
        calibrated: tuple[ClassThreshold, str] | None = calibrated_threshold(cfg)
        if calibrated is None:
            image = DEFAULT_THRESHOLD if cfg.threshold is None else float(cfg.threshold)
            return image, image, False, "slider" if cfg.threshold is None else "threshold="
        chosen, source = calibrated
        # calibrated pixel thresholds are in the metrics' units (clipad.cli.predict_outputs.OutputOptions);
        # without one the outline starts at the image threshold
        pixel = chosen.image if chosen.pixel is None else chosen.pixel
        return chosen.image, pixel, True, f"thresholds file: {source}"


def checkpoint_classes(saved: DictConfig) -> list[str]:
    """The classes of the data a checkpoint was trained for (its config's data.classes, else all_classes)."""
    data = saved.get("data")
    if data is None:
        return []
    return [str(name) for name in data.get("classes") or data.get("all_classes") or []]


def load_app_model(label: str, ckpt_path: str, cfg: DictConfig, overrides: list[str], device: str,
                   thresholds: str | None) -> AppModel:
    """One checkpoint on `device`, in eval mode, with shots_dir's references attached when it is few-shot."""
    model_cfg = cfg.copy()
    OmegaConf.set_struct(model_cfg, False)
    model_cfg.ckpt_path = ckpt_path
    model_cfg.thresholds = thresholds
    module = load_module(model_cfg, overrides, device)
    transform = model_input(module)
    attach_normal_prompts(module, model_cfg, transform)
    _, saved = read_checkpoint(ckpt_path)  # the module's config keeps only the model's nodes of it
    return AppModel(label, Path(ckpt_path), module, transform, device, model_cfg, checkpoint_classes(saved))
