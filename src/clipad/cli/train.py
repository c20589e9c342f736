"""`python train.py ...`: train a model on its auxiliary data, then test zero-/few-shot on the targets."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, open_dict

from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.hydra_setup import command_line_overrides
from clipad.cli.interruption import SIGTERM_EXIT_CODE, last_checkpoint, report_interruption
from clipad.cli.results_output import report_results, sweep_value
from clipad.cli.run_info import save_run_info
from clipad.cli.shot_grid import check_model_supports, run_grid, shot_grid, use_first_point
from clipad.data.datamodule import AnomalyDataModule
from clipad.errors import PathNotFoundError
from clipad.models.registry import build_module
from clipad.report.console import print_trained_vs_untrained
from clipad.tracking import build_loggers, finish_loggers

log = logging.getLogger(__name__)
# The frozen CLIP stays in eval mode on purpose (AnomalyModule.train); Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


def run_identity(cfg: DictConfig) -> tuple[str, str | None]:
    """A readable run name from the command-line overrides, and the W&B group of a multirun."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # called outside a Hydra run (tests)
        return cfg.get("run_name") or cfg.task_name, None
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("paths.", "hydra."))]
    name = cfg.get("run_name") or (",".join(overrides) or cfg.task_name)
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    return name, group


def build_callbacks(cfg: DictConfig, has_validation: bool, skip: tuple[str, ...] = ()) -> list[L.Callback]:
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if name in skip or not isinstance(cb_cfg, DictConfig) or "_target_" not in cb_cfg:
            continue
        if name == "model_checkpoint" and not has_validation:
            cb_cfg = cb_cfg.copy()
            with open_dict(cb_cfg):
                cb_cfg.monitor = None  # no validation data: keep the last epoch
        callbacks.append(instantiate(cb_cfg))
    return callbacks


def resolve_resume_path(cfg: DictConfig) -> str | None:
    if cfg.get("ckpt_path") in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        path = last_checkpoint(Path(cfg.paths.output_dir))
        if not path.is_file():
            raise PathNotFoundError(
                f"ckpt_path=last: no {path}. Resume in the interrupted run's directory: "
                "hydra.run.dir=<that run dir> ckpt_path=last, or give ckpt_path=<run dir>/checkpoints/last.ckpt"
            )
        return str(path)
    path = Path(cfg.ckpt_path).expanduser()
    if not path.is_file():
        raise PathNotFoundError(f"ckpt_path={path} does not exist: give a checkpoint file, or ckpt_path=last")
    return str(path)


def evaluation_trainer(cfg: DictConfig) -> L.Trainer:
    """A bare trainer for extra evaluations (the untrained baseline): no loggers, no checkpoints."""
    return L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def train(cfg: DictConfig) -> float | None:
    """Fit (if the model has trainable parts), test, report. Returns the metric a sweep optimises."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name, group = run_identity(cfg)
    grid = shot_grid(cfg)
    use_first_point(cfg, grid)
    datamodule = AnomalyDataModule.from_config(cfg)
    datamodule.check_inputs(few_shot=any(shots > 0 for shots, _ in grid))  # fail in seconds, before any training
    module = build_module(cfg)
    check_model_supports(module, grid)
    if module.backbone.is_random:
        log.warning("RANDOM backbone (%s): numbers are not comparable with the papers.", cfg.backbone.name)
    # DDP ranks > 0 re-run this command (Lightning's subprocess launcher): they only join the fit/test.
    is_rank_zero = rank_zero_only.rank == 0
    trains = bool(cfg.get("train", True)) and module.is_trainable
    if is_rank_zero:
        save_run_info(cfg, output_dir)
        if trains:
            datamodule.check_overlap()  # in seconds, before any evaluation or epoch (other ranks: in setup)
        elif not module.is_trainable:
            # Training-free models (clip, winclip): a config-only checkpoint, so evaluate/predict/calibrate/app
            # take the same ckpt_path=... as for a trained model.
            saved = save_clipad_checkpoint(output_dir / "checkpoints" / "last.ckpt", module)
            log.info("training-free model: its configuration is saved as %s (ckpt_path for evaluate/predict)", saved)

    trainer: L.Trainer | None = None
    try:
        untrained = None
        if cfg.get("compare_untrained") and module.is_trainable and cfg.test and is_rank_zero:
            evaluation_trainer(cfg).test(module, datamodule=datamodule, verbose=False)
            untrained = module.stage_results["test"]

        with open_dict(cfg):
            cfg.run_name = name
        loggers = build_loggers(cfg, group=group)
        has_validation = datamodule.has_validation and module.is_trainable
        # LearningRateMonitor refuses to run without a logger (logger=none, debug=fast).
        callbacks = build_callbacks(cfg, has_validation, skip=() if loggers else ("lr_monitor",))
        trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
        if trains:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume_path(cfg))
        if not cfg.get("test", True):
            finish_loggers(loggers)
            if is_rank_zero:
                datamodule.bad_inputs.finish()
            return None
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        grid_results = run_grid(trainer, module, datamodule, grid, ckpt_path=best or None)
    except SIGTERMException:
        # Lightning's SIGTERMException exits 0; a job stopped by SIGTERM must not look like a finished one.
        if is_rank_zero:
            report_interruption(trainer, output_dir, command_line_overrides(), trains)
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    results = report_results(cfg, trainer, module.backbone.is_random, loggers, grid_results, output_dir)
    if trainer.is_global_zero:
        if untrained is not None:
            print_trained_vs_untrained(untrained, results)
        if best:
            log.info("Best checkpoint: %s", best)
    finish_loggers(loggers)
    if trainer.is_global_zero:
        datamodule.bad_inputs.finish()  # the run's last line: counts of every fallback
    return sweep_value(results)

