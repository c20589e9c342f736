"""The one error type of clipad's expected failures (bad input, bad config, missing files or weights)."""
from __future__ import annotations


class ClipadError(Exception):
    """An expected failure whose message names the file or config key and the fix.

    Commands print the message in one or two lines and exit 2; the traceback is shown only with
    HYDRA_FULL_ERROR=1. Unexpected errors (bugs) keep their tracebacks.
    """


class ConfigError(ClipadError, ValueError):
    """A config value or command-line override that cannot work: the message names the key and the fix."""


class PathNotFoundError(ClipadError, FileNotFoundError):
    """A file or folder a config key names does not exist: the message names the key and the path."""
