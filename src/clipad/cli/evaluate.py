"""`python evaluate.py ckpt_path=... data=X [shots=k]`: evaluate a trained model on any dataset(s)."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from clipad.calibration.thresholds import read_thresholds
from clipad.cli.checkpoint import module_from_checkpoint
from clipad.cli.hydra_setup import command_line_overrides
from clipad.cli.results_output import report_results, sweep_value
from clipad.cli.run_info import save_run_info
from clipad.cli.shot_grid import check_model_supports, run_grid, shot_grid, use_first_point
from clipad.cli.train import build_callbacks, run_identity
from clipad.data.datamodule import AnomalyDataModule
from clipad.tracking import build_loggers, finish_loggers

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> float | None:
    grid = shot_grid(cfg)
    use_first_point(cfg, grid)
    thresholds = read_thresholds(cfg.thresholds) if cfg.get("thresholds") else None  # a bad file fails first
    module = module_from_checkpoint(cfg.ckpt_path, cfg, command_line_overrides() if overrides is None else overrides)
    check_model_supports(module, grid)
    module.decision_thresholds = thresholds
    if thresholds is not None and thresholds.random_backbone != module.backbone.is_random:
        log.warning("thresholds=%s were calibrated with a %s backbone, this model's is %s", thresholds.path,
                    "random" if thresholds.random_backbone else "pretrained",
                    "random" if module.backbone.is_random else "pretrained")
    cfg = module.cfg
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    save_run_info(cfg, output_dir)
    datamodule = AnomalyDataModule.from_config(cfg)
    datamodule.check_inputs(few_shot=any(shots > 0 for shots, _ in grid))  # fail in seconds, before any scoring
    _, group = run_identity(cfg)
    loggers = build_loggers(cfg, group=group)
    callbacks = build_callbacks(cfg, has_validation=False, skip=("model_checkpoint",))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                                     enable_checkpointing=False)
    grid_results = run_grid(trainer, module, datamodule, grid, ckpt_path=None)
    results = report_results(cfg, trainer, module.backbone.is_random, loggers, grid_results, output_dir)
    finish_loggers(loggers)
    if trainer.is_global_zero:
        datamodule.bad_inputs.finish()  # the run's last line: counts of every fallback
    return sweep_value(results)

