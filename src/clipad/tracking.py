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
    for logger_cfg in (cfg.get("logger") or {}).values():
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
            make_logger = instantiate(logger_cfg, _partial_=True)  # `config` would clash with instantiate's own
            loggers.append(make_logger(config=OmegaConf.to_container(cfg, resolve=True)))
        else:
            loggers.append(instantiate(logger_cfg))
    return loggers


def log_results(loggers: list[Logger], results, prefix: str = "test") -> None:
    """The per-class table (and each section: inspection, decisions) as W&B Tables and the dataset/domain
    means as run summary metrics."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        columns, data = results.wandb_table_data()
        logger.log_table(key=f"{prefix}/results", columns=columns, data=data)
        for name, section in results.sections.items():
            columns, data = section.wandb_table_data()
            logger.log_table(key=f"{prefix}/results_{name}", columns=columns, data=data)
        logger.experiment.summary.update(results.summary(prefix=prefix))


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the run of every logger, so the next job of a multirun starts a run of its own."""
    for logger in loggers:
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
