"""Where clipad's Hydra configs live: the repository's conf/ (env CLIPAD_CONF_DIR overrides it)."""
from __future__ import annotations

import os
from pathlib import Path

import clipad


def conf_dir() -> Path:
    """The config directory, read from the environment on every call (tests point it elsewhere)."""
    override = os.environ.get("CLIPAD_CONF_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return Path(clipad.__file__).resolve().parents[2] / "conf"


# Fixed at import time: Hydra mains need the directory when their decorator runs.
CONF_DIR: Path = conf_dir()
