"""Loading clipad checkpoints (Lightning's, or converted reference weights) for evaluation and prediction."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from clipad.models.base import AnomalyModule
from clipad.models.registry import build_module

# Config nodes that define the trained model: taken from the checkpoint, not from the command line's defaults.
MODEL_NODES = ("model", "backbone", "prompt", "adapter")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], DictConfig]:
    """State dict and the config the model was trained with. Loaded with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise ValueError(f"{path} is not a clipad checkpoint (torch.load(weights_only=True) failed: {error})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "cfg" not in checkpoint.get(
        "hyper_parameters", {}
    ):
        raise ValueError(
            f"{path} is not a clipad checkpoint (no state_dict + hyper_parameters.cfg). "
            "Reference AdaCLIP/AdaptCLIP weights must first be imported: python -m clipad.convert adaclip|adaptclip IN OUT"
        )
    return checkpoint["state_dict"], OmegaConf.create(checkpoint["hyper_parameters"]["cfg"])


def merged_config(saved: DictConfig, current: DictConfig, explicit_overrides: list[str]) -> DictConfig:
    """The checkpoint's model/backbone config + this run's data, paths and evaluation options.

    Keys the user set explicitly on the command line for the model nodes (e.g. backbone.checkpoint=...)
    still win over the checkpoint's.
    """
    merged = current.copy()
    OmegaConf.set_struct(merged, False)
    for node in MODEL_NODES:
        if node in saved:
            merged[node] = saved[node]
        elif node in merged:
            del merged[node]
    model_overrides = [o for o in explicit_overrides if o.split("=", 1)[0].split(".", 1)[0] in MODEL_NODES
                       and "." in o.split("=", 1)[0]]
    if model_overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(model_overrides))
    return merged


def module_from_checkpoint(
    path: str | Path, current: DictConfig, explicit_overrides: list[str] = (), device: str = "cpu"
) -> AnomalyModule:
    state_dict, saved = read_checkpoint(path)
    module = build_module(merged_config(saved, current, list(explicit_overrides)), device=device)
    module.load_state_dict(state_dict, strict=True)
    return module


def save_clipad_checkpoint(path: str | Path, module: AnomalyModule, extra: dict | None = None) -> Path:
    """A minimal checkpoint (trainable parameters, BatchNorm statistics, config) that evaluate.py reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), **(extra or {})}, path)
    return path
