"""The Hydra mains of train.py, evaluate.py, `python -m clipad.predict`, `python -m clipad.calibrate` and
`python -m clipad.app`, light to import.

Each composes and checks its config (clipad.cli.hydra_setup) before it imports torch, lightning and the
models: a config mistake is reported in about a second, not after the ~7 s those imports take.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from clipad.cli.hydra_setup import hydra_entry


@hydra_entry("train")
def train_main(cfg: DictConfig) -> float | None:
    """Returns the metric a sweep optimises (Optuna reads it)."""
    import torch

    from clipad.cli.train import train

    torch.set_float32_matmul_precision("high")
    return train(cfg)


@hydra_entry("eval")
def evaluate_main(cfg: DictConfig) -> float | None:
    from clipad.cli.evaluate import evaluate

    return evaluate(cfg)


@hydra_entry("predict")
def predict_main(cfg: DictConfig) -> Any:
    from clipad.cli.predict import predict

    predict(cfg)


@hydra_entry("calibrate")
def calibrate_main(cfg: DictConfig) -> None:
    from clipad.cli.calibrate import calibrate

    calibrate(cfg)


@hydra_entry("app")
def app_main(cfg: DictConfig) -> None:
    from clipad.app.checks import check_app_config

    check_app_config(cfg)  # before torch and Gradio load
    from clipad.app.ui import run_app

    run_app(cfg)
