"""Checks of a composed run config made before torch and lightning load, so a mistake fails in a second.

* Every `+key=value` / `++key=value` of the command line must name a key the config has without it, or lie
  under a node that is instantiated with keyword arguments (it has `_target_`: trainer, callbacks.*,
  logger.*) or under hydra.*. A new key anywhere else is read by no code, so it is an error.
* `+prompt=...` / `+adapter=...` for a model that has no such group are errors (conf/ refuses the form
  without `+` by itself).
* Batch sizes and worker counts, shot counts, mandatory keys, the checkpoint file, the output directory.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clipad.cli.config_errors import leaf_keys, model_group_message, unknown_key_message
from clipad.cli.shot_grid import shot_grid
from clipad.config_dir import CONF_DIR
from clipad.errors import ConfigError, PathNotFoundError

POSITIVE_INTEGERS = ("model.batch_size", "data.batch_size", "data.eval_batch_size", "batch_size")
NON_NEGATIVE_INTEGERS = ("data.num_workers", "num_workers", "model.max_epochs")
# Keys whose default is a number but that also take a word (Lightning: devices=auto).
WORDS_ALLOWED = ("trainer.devices",)
# Configs whose ckpt_path names a model to load (train's ckpt_path resumes and may be `last`).
LOADS_CHECKPOINT = ("eval", "predict", "export", "calibrate")
WRITES_NOTHING = ("inspect",)
_ABSENT = object()


def check_run_config(cfg: DictConfig, overrides: list[str], config_name: str) -> None:
    """Raise ConfigError (or PathNotFoundError) for the first mistake found; return when the run can start."""
    check_additions(cfg, overrides, config_name)
    check_value_types(overrides, config_name)
    check_mandatory_keys(cfg)
    if config_name in WRITES_NOTHING:  # inspect: reads data.* only
        return
    check_counts(cfg)
    if "few_shot_seed" in cfg:
        shot_grid(cfg)
    if config_name in LOADS_CHECKPOINT:
        check_checkpoint_exists(cfg)
    check_output_dir(cfg)


def check_additions(cfg: DictConfig, overrides: list[str], config_name: str) -> None:
    parsed = OverridesParser.create().parse_overrides(
        [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    )
    additions = [o for o in parsed if o.is_add() or o.is_force_add()]
    model = OmegaConf.select(cfg, "model.name", default=None)
    base: DictConfig | None = None
    for override in additions:
        key = override.key_or_group
        if (CONF_DIR / key).is_dir():
            raise ConfigError(model_group_message(key, override.input_line, model)
                              or f"{override.input_line}: the {config_name} config does not use the {key} group; "
                                 f"drop {override.input_line}")
        if under_instantiated_node(cfg, key):
            continue
        if override.is_force_add():
            if base is None:
                base = config_without(config_name, overrides, additions)
            if OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
                continue
        known = leaf_keys(base if base is not None else cfg)
        raise ConfigError(unknown_key_message(key, override.input_line, config_name,
                                              [k for k in known if k != key and not k.startswith(f"{key}.")]))


def check_value_types(overrides: list[str], config_name: str) -> None:
    """A number or a switch given as a word (trainer.max_epochs=abc) is refused before any work starts.

    Hydra types each command-line value (5 -> int, true -> bool, abc -> str); a word is refused where the
    config's own value, composed without that override, is a number or a switch.
    """
    parsed = OverridesParser.create().parse_overrides(
        [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    )
    changes = [o for o in parsed if not (o.is_add() or o.is_force_add() or o.is_delete())]
    words = [o for o in changes if isinstance(o.value(), str) and "${" not in o.value()
             and o.key_or_group not in WORDS_ALLOWED and not (CONF_DIR / o.key_or_group.split("@")[0]).is_dir()]
    if not words:
        return
    sweeps = [o for o in parsed if o.is_sweep_override()]  # one job's value each: not composable as they stand
    base = config_without(config_name, overrides, words + sweeps)
    for override in words:
        try:
            default = OmegaConf.select(base, override.key_or_group, default=None)
        except OmegaConfBaseException:  # its interpolation needs a Hydra run (e.g. ${hydra:...}): not a number
            continue
        if isinstance(default, bool | int | float):
            kind, shown = ("true or false", str(default).lower()) if isinstance(default, bool) else ("a number", default)
            raise ConfigError(f"{override.input_line}: {override.key_or_group} takes {kind} "
                              f"(default {shown}); e.g. {override.key_or_group}={shown}")


def under_instantiated_node(cfg: DictConfig, key: str) -> bool:
    """Whether `key` or one of its parents is a node built with hydra.utils.instantiate(node) (has _target_)."""
    parts = key.split(".")
    for depth in range(1, len(parts) + 1):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None, throw_on_resolution_failure=False)
        if isinstance(node, DictConfig) and "_target_" in node:
            return True
    return False


def config_without(config_name: str, overrides: list[str], additions: list[Override]) -> DictConfig:
    """The config composed from the same command line minus its key additions (groups and changes kept)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from clipad.cli.hydra_setup import compose_config

    added = {o.input_line for o in additions}
    kept = [o for o in overrides if o not in added and not o.startswith("hydra")]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra run: compose with its search path
        return compose(config_name=config_name, overrides=kept)
    return compose_config(config_name, kept)


def check_mandatory_keys(cfg: DictConfig) -> None:
    missing = [key for key in cfg if OmegaConf.is_missing(cfg, key)]  # mandatory keys are top-level (ckpt_path, input)
    if missing:
        example = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} must be given on the command line: {example}")


def resolved(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{key}: cannot resolve its value ({str(error).splitlines()[0]})") from error


def check_counts(cfg: DictConfig) -> None:
    for keys, lowest, meaning in ((POSITIVE_INTEGERS, 1, "a positive integer"),
                                  (NON_NEGATIVE_INTEGERS, 0, "an integer >= 0")):
        for key in keys:
            value = resolved(cfg, key)
            if value is _ABSENT or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ConfigError(f"{key}={value}: must be {meaning}")


def check_checkpoint_exists(cfg: DictConfig) -> None:
    path = Path(str(cfg.ckpt_path)).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise PathNotFoundError(f"ckpt_path={path} {what}: give a checkpoint file (a training run's "
                                "checkpoints/*.ckpt, or one written by python -m clipad.convert)")


def check_output_dir(cfg: DictConfig) -> None:
    """The folder the run writes to exists (or can be made) and takes a file."""
    key = "output_dir" if "output_dir" in cfg else "paths.output_dir"
    value = resolved(cfg, key)
    if value is _ABSENT or value in (None, ""):
        return
    path = Path(str(value)).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        fix = "output_dir=DIR" if key == "output_dir" else RUN_DIR_FIX
        raise ConfigError(f"{key}={path}: cannot write there ({error.strerror}: {error.filename or path}). "
                          f"Choose a writable folder: {fix}, or run from a writable directory.") from error


RUN_DIR_FIX = "hydra.run.dir=DIR (paths.output_dir follows it; multirun: hydra.sweep.dir=DIR)"
