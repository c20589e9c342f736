"""One- or two-line messages for Hydra's own config errors (unknown key, unknown option, bad syntax).

Hydra's messages suggest `+key=value` for a misspelt key, which adds a key no code reads; these say which
key or option is unknown, the closest existing ones, and how to list them.
"""
from __future__ import annotations

import difflib
import re

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig

from clipad.config_dir import CONF_DIR

# Config groups that configure one model only (conf/model/<model>.yaml lists them in its defaults).
MODEL_OF_GROUP = {"prompt": "adaclip", "adapter": "adaptclip"}
GROUP_HELP = {
    "prompt": "AdaCLIP's prompt type (prompt=hybrid|static|dynamic|none)",
    "adapter": "AdaptCLIP's adapters (adapter=all|visual|textual|visual_textual|pq)",
}
COMMANDS = {"train": "python train.py", "eval": "python evaluate.py", "predict": "python -m clipad.predict"}
COULD_NOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")


def closest(name: str, candidates: list[str], count: int = 3) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=count, cutoff=0.6)


def did_you_mean(name: str, candidates: list[str]) -> str:
    matches = closest(name, candidates)
    return f" Did you mean {' or '.join(matches)}?" if matches else ""


def leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config (interpolations unresolved), parents before children."""
    keys = []
    for key in cfg.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys += leaf_keys(child, f"{dotted}.")
    return keys


def similar_keys(key: str, known: list[str]) -> list[str]:
    """Existing keys whose last part is close to the key's, under the same top-level node first
    (model.lrr -> model.optimizer.lr, modle -> model)."""
    leaf, top = key.rsplit(".", 1)[-1], key.split(".")[0]
    same_level = [k for k in known if "." in k and k.split(".")[0] == top] if "." in key else [
        k for k in known if "." not in k]
    for pool in (same_level, known):
        leaves = closest(leaf, sorted({k.rsplit(".", 1)[-1] for k in pool}))
        matches = [k for k in pool if k.rsplit(".", 1)[-1] in leaves]
        if matches:
            return sorted(matches, key=lambda k: (leaves.index(k.rsplit(".", 1)[-1]), k.count(".")))[:3]
    return []


def model_group_message(group: str, override: str, model: str | None) -> str | None:
    """The message for a prompt/adapter option given to a model that has no such group, else None."""
    owner = MODEL_OF_GROUP.get(group)
    if owner is None or model == owner:
        return None
    chosen = f"model={model}" if model else "this model"
    return (f"{override}: the {group} group sets {GROUP_HELP[group]}, and {chosen} has no {group} options. "
            f"Drop {override}, or choose model={owner}.")


def chosen_model(overrides: list[str]) -> str | None:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "model":
            return value
    return None


def unknown_option_message(error: MissingConfigException) -> str:
    missing = str(error.missing_cfg_file or "")
    group, _, option = missing.rpartition("/")
    options = [o for o in error.options or [] if not o.startswith("_")]  # _common: shared parts, not options
    if not group or not options:
        return str(error).split("\n")[0]
    return (f"{group}={option}: no option {option!r} in conf/{group}/.{did_you_mean(option, options)} "
            f"Options: {', '.join(options)}")


def unknown_key_message(key: str, override: str, config_name: str, known: list[str] | None) -> str:
    matches = similar_keys(key, known or [])
    hint = f" Did you mean {' or '.join(matches)}?" if matches else ""
    command = COMMANDS.get(config_name, f"--config-name {config_name}")
    return (f"{override}: the {config_name} config has no key {key!r}.{hint} List the keys: {command} --cfg job "
            f"(new keys, +{key}=..., are refused: no code would read them).")


def hydra_error_message(error: HydraException, overrides: list[str], config_name: str,
                        known_keys: list[str] | None = None) -> str:
    """A short message for Hydra's composition and override errors; `known_keys` feeds "did you mean"."""
    if isinstance(error, MissingConfigException):
        return unknown_option_message(error)
    text = str(error)
    match = COULD_NOT_OVERRIDE.search(text)
    if match:
        key = match.group(1)
        override = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        group_message = model_group_message(key.split(".")[0], override, chosen_model(overrides))
        if group_message:
            return group_message
        if "No match in the defaults list" in text:
            groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
            return f"{override}: {key!r} is not a config group of {config_name}.{did_you_mean(key, groups)}"
        return unknown_key_message(key, override, config_name, known_keys)
    multiple = re.match(r"Multiple values for (\S+)\.", text)
    if multiple:
        group = multiple.group(1)
        override = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == group), f"+{group}=...")
        return f"{override}: {group} is chosen already; choose another option without '+': {override.lstrip('+')}"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if error.__cause__ is not None:
        lines.append(str(error.__cause__).splitlines()[0])
    return " ".join(lines[:3])
