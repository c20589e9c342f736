"""Loading clipad checkpoints (Lightning's, or converted reference weights) for evaluation and prediction."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from clipad.errors import ClipadError, ConfigError, PathNotFoundError
from clipad.models.base import AnomalyModule
from clipad.models.registry import build_module

# Config nodes that define the trained model: taken from the checkpoint, not from the command line's defaults.
MODEL_NODES = ("model", "backbone", "prompt", "adapter")
# The keys that say which option of each of those groups a config holds.
GROUP_IDENTITY = {"model": ("name",), "backbone": ("name",), "prompt": ("type",),
                  "adapter": ("visual", "textual", "prompt_query")}


class CheckpointError(ClipadError, ValueError):
    """A file that is not a clipad checkpoint: the message names it and how to import reference weights."""


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], DictConfig]:
    """State dict and the config the model was trained with. Loaded with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PathNotFoundError(f"ckpt_path={path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise CheckpointError(
            f"{path} is not a clipad checkpoint (torch.load(weights_only=True) failed: {error})"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "cfg" not in checkpoint.get(
        "hyper_parameters", {}
    ):
        raise CheckpointError(
            f"{path} is not a clipad checkpoint (no state_dict + hyper_parameters.cfg). "
            "Reference AdaCLIP/AdaptCLIP/AnomalyCLIP weights must first be imported: "
            "python -m clipad.convert adaclip|adaptclip|anomalyclip IN OUT"
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


def group_choice(cfg: DictConfig, group: str) -> dict:
    return {key: OmegaConf.select(cfg, f"{group}.{key}", default=None, throw_on_resolution_failure=False)
            for key in GROUP_IDENTITY[group]}


def describe_model(cfg: DictConfig) -> str:
    """E.g. `model=adaclip (backbone clipad-tiny, prompt hybrid)`."""
    parts = [f"backbone {OmegaConf.select(cfg, 'backbone.name', default='?')}"]
    if "prompt" in cfg:
        parts.append(f"prompt {OmegaConf.select(cfg, 'prompt.type', default='?')}")
    if "adapter" in cfg:
        on = [name for name, value in group_choice(cfg, "adapter").items() if value]
        parts.append(f"adapters {'+'.join(on) or 'none'}")
    return f"model={OmegaConf.select(cfg, 'model.name', default='?')} ({', '.join(parts)})"


def check_groups_match(saved: DictConfig, current: DictConfig, explicit_overrides: list[str], path: str | Path
                       ) -> None:
    """A model group chosen on the command line (model=, backbone=, prompt=, adapter=) must be the checkpoint's."""
    for override in explicit_overrides:
        group = override.lstrip("+").split("=", 1)[0]
        if group in GROUP_IDENTITY and group_choice(current, group) != group_choice(saved, group):
            raise ConfigError(
                f"{override} contradicts ckpt_path={path}, which holds {describe_model(saved)}. Drop {override} "
                "(the checkpoint defines the model), or give a checkpoint trained with it."
            )


def module_from_checkpoint(
    path: str | Path, current: DictConfig, explicit_overrides: list[str] = (), device: str = "cpu"
) -> AnomalyModule:
    state_dict, saved = read_checkpoint(path)
    check_groups_match(saved, current, list(explicit_overrides), path)
    module = build_module(merged_config(saved, current, list(explicit_overrides)), device=device)
    module.load_state_dict(state_dict, strict=True)
    return module


def save_clipad_checkpoint(path: str | Path, module: AnomalyModule, extra: dict | None = None) -> Path:
    """A minimal checkpoint (trainable parameters, BatchNorm statistics, config) that evaluate.py reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), **(extra or {})}, path)
    return path
