"""Which LightningModule implements each `model=` config."""
from __future__ import annotations

import importlib

from omegaconf import DictConfig, open_dict

from clipad.errors import ConfigError
from clipad.models.base import AnomalyModule

MODULES = {
    "clip": "clipad.models.clip_baseline:ClipBaselineModule",
    "adaclip": "clipad.models.adaclip.module:AdaCLIPModule",
    "adaptclip": "clipad.models.adaptclip.module:AdaptCLIPModule",
    "anomalyclip": "clipad.models.anomalyclip.module:AnomalyCLIPModule",
    "winclip": "clipad.models.winclip.module:WinCLIPModule",
}


def module_class(name: str) -> type[AnomalyModule]:
    if name not in MODULES:
        raise ConfigError(f"model.name={name!r} is unknown; choose one of {sorted(MODULES)}")
    module_path, class_name = MODULES[name].split(":")
    return getattr(importlib.import_module(module_path), class_name)


def build_module(cfg: DictConfig, device: str = "cpu") -> AnomalyModule:
    return module_class(cfg.model.name)(cfg, device=device)


def build_module_structure(cfg: DictConfig) -> AnomalyModule:
    """The module on the meta device, without CLIP weights: for parameter counts and shape checks."""
    structure = cfg.copy()
    with open_dict(structure):
        structure.backbone.pretrained = None
        structure.backbone.checkpoint = None
        structure.backbone.allow_random = True
    return build_module(structure, device="meta")
