"""What every Hydra entry point of clipad shares: the config directory and custom resolvers."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from clipad.config_dir import CONF_DIR


def register_resolvers() -> None:
    # ${pid:} keeps run dirs of processes started in the same microsecond apart.
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """hydra.main bound to clipad's conf/ directory, with clipad's resolvers registered first."""
    register_resolvers()
    return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")


def command_line_overrides() -> list[str]:
    """The overrides typed on the command line of the current Hydra run ([] outside one, e.g. in tests)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config without starting a Hydra run (commands that write no run dir)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        overrides = [*overrides, "paths.output_dir=."]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
