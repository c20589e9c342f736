"""The app's own config checks, made before torch, the models and Gradio load (a mistake fails in a second)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig

from clipad.calibration.thresholds import read_thresholds
from clipad.errors import ConfigError, PathNotFoundError

# clipad.report.heatmaps.SCALINGS, which imports torch (tests/test_app.py checks that they agree)
SCALINGS = ("per_image", "per_dataset", "absolute")


def check_app_config(cfg: DictConfig) -> None:
    for key in ("ckpt_path", "compare_ckpt_path"):
        value = cfg.get(key)
        if value and not Path(str(value)).expanduser().is_file():
            raise PathNotFoundError(f"{key}={value} is not a file: give a checkpoint (a training run's "
                                    "checkpoints/*.ckpt; `make demo` leaves one under outputs/demo/)")
    if cfg.get("compare_thresholds") and not cfg.get("compare_ckpt_path"):
        raise ConfigError("compare_thresholds= is for compare_ckpt_path=, which is not given")
    for key in ("thresholds", "compare_thresholds"):
        if cfg.get(key):
            if cfg.get("threshold") is not None:
                raise ConfigError(f"give either threshold=... or {key}=FILE, not both")
            read_thresholds(cfg[key])  # a malformed file fails now, not when the page opens
    if cfg.scaling not in SCALINGS:
        raise ConfigError(f"scaling={cfg.scaling}: choose one of {', '.join(SCALINGS)} (conf/app.yaml)")
    if not 0 <= int(cfg.port) <= 65535:
        raise ConfigError(f"port={cfg.port}: give a TCP port (0-65535)")
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("the app needs Gradio, which is not installed: `make install` (or pip install -e '.[app]')")
