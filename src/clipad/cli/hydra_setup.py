"""What every Hydra entry point of clipad shares: the config directory, resolvers, checks and error reporting.

Expected failures (ClipadError, and Hydra's own config errors: unknown key, unknown option, bad syntax)
print one short message on stderr and exit 2; HYDRA_FULL_ERROR=1 shows their traceback instead. Other
exceptions are bugs and keep their tracebacks. Nothing here imports torch: a command that fails on its
config fails in about a second.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from clipad.config_dir import CONF_DIR
from clipad.errors import ClipadError

EXPECTED_EXIT_CODE = 2
_FULL_ERROR = "HYDRA_FULL_ERROR"
Task = Callable[[DictConfig], Any]


def register_resolvers() -> None:
    # ${pid:} keeps run dirs of processes started in the same microsecond apart.
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)


def full_error_requested() -> bool:
    return os.environ.get(_FULL_ERROR) == "1"


def exit_with_message(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXPECTED_EXIT_CODE)


def reporting_errors(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For commands that compose `config_name` without a Hydra main (summary, export, convert): ClipadError
    and Hydra's config errors become a message and exit status 2."""

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def reporting(*args, **kwargs):
            if full_error_requested():
                return main(*args, **kwargs)
            try:
                return main(*args, **kwargs)
            except ClipadError as error:
                exit_with_message(str(error))
            except HydraException as error:
                exit_with_message(hydra_message(error, config_name))

        return reporting

    return decorate


@contextlib.contextmanager
def _environment_value(name: str, value: str | None) -> Iterator[None]:
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def hydra_entry(config_name: str) -> Callable[[Task], Callable[[], Any]]:
    """hydra.main bound to clipad's conf/, with clipad's resolvers, config checks and error reporting.

    The task runs only after clipad.cli.config_checks passed; it should import torch and lightning itself.
    """
    register_resolvers()

    def decorate(task: Task) -> Callable[[], Any]:
        started = False
        user_full_error: str | None = None

        @functools.wraps(task)
        def checked_task(cfg: DictConfig) -> Any:
            nonlocal started
            started = True
            # The run (and processes it starts, e.g. DDP ranks re-running this command) sees the user's setting.
            with _environment_value(_FULL_ERROR, user_full_error):
                from clipad.cli.config_checks import check_run_config

                try:
                    check_run_config(cfg, command_line_overrides(), config_name)
                    return task(cfg)
                except ClipadError as error:
                    if full_error_requested():
                        raise
                    exit_with_message(str(error))

        hydra_main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(checked_task)

        @functools.wraps(task)
        def main() -> Any:
            nonlocal started, user_full_error
            started, user_full_error = False, os.environ.get(_FULL_ERROR)
            if {"--help", "-h"} & set(sys.argv[1:]) and "--resolve" not in sys.argv:
                return print_help(config_name)
            if full_error_requested():
                return hydra_main()
            # Hydra prints its own errors as tracebacks unless HYDRA_FULL_ERROR=1, which makes it re-raise them
            # to us: set while Hydra composes, reset around the task (checked_task).
            with _environment_value(_FULL_ERROR, "1"):
                try:
                    return hydra_main()
                except HydraException as error:
                    exit_with_message(hydra_message(error, config_name))
                except OSError as error:
                    if started:
                        raise
                    exit_with_message(run_dir_message(error))

        return main

    return decorate


def print_help(config_name: str) -> None:
    from clipad.cli.help_text import help_text

    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        print(help_text(config_name, overrides))
    except HydraException as error:
        if full_error_requested():
            raise
        exit_with_message(hydra_message(error, config_name))


def hydra_message(error: HydraException, config_name: str) -> str:
    from hydra.core.global_hydra import GlobalHydra

    from clipad.cli.config_errors import COULD_NOT_OVERRIDE, hydra_error_message, leaf_keys

    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    known = None
    match = COULD_NOT_OVERRIDE.search(str(error))
    if match:  # keys of the same command line without the unknown one feed "did you mean"
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != match.group(1)]
        GlobalHydra.instance().clear()  # the failed run left it initialised
        with contextlib.suppress(HydraException, ValueError):
            known = leaf_keys(compose_config(config_name, [o for o in rest if "," not in o and "=" in o]))
    return hydra_error_message(error, overrides, config_name, known)


def run_dir_message(error: OSError) -> str:
    """Hydra could not create the run directory or write its .hydra/ files."""
    from clipad.cli.config_checks import RUN_DIR_FIX

    return (f"cannot write the run directory ({error.strerror}: {error.filename}). "
            f"Choose a writable folder: {RUN_DIR_FIX}, or run from a writable directory.")


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
