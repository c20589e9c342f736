"""Loggers from the `logger` config group; W&B goes offline by itself when nobody is logged in."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (env key or the netrc entry `wandb login` writes), without a prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_loggers(cfg: DictConfig, group: str | None = None) -> list[Logger]:
    loggers: list[Logger] = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not isinstance(logger_cfg, DictConfig) or "_target_" not in logger_cfg:
            continue
        logger_cfg = logger_cfg.copy()
        if logger_cfg._target_.endswith("WandbLogger"):
            with open_dict(logger_cfg):
                if logger_cfg.get("offline") is None:
                    logger_cfg.offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_logged_in()
                    if logger_cfg.offline:
                        log.info("W&B: not logged in, logging offline (sync later with `wandb sync`)")
                if group:
                    logger_cfg.group = group
                Path(logger_cfg.save_dir).mkdir(parents=True, exist_ok=True)
            loggers.append(instantiate(logger_cfg, config=OmegaConf.to_container(cfg, resolve=True)))
        else:
            loggers.append(instantiate(logger_cfg))
    return loggers
