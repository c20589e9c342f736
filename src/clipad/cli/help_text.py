"""`--help` of clipad's Hydra mains in about a second.

Hydra's own --help lists the config groups through its config loader, which rebuilds its repository once per
group (3 s here). This fills the same template (hydra.help.template) from a listing of conf/ instead.
"""
from __future__ import annotations

import string

from hydra._internal.utils import get_args_parser
from omegaconf import OmegaConf

from clipad.config_dir import CONF_DIR


def config_groups(hydra_groups: bool) -> str:
    """`group: option, option` lines of conf/, as Hydra's help prints them."""
    lines = []
    for folder in sorted(p for p in CONF_DIR.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONF_DIR).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options and group.startswith("hydra") == hydra_groups:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines) + "\n"


def flags_help() -> str:
    """Hydra's command-line flags, formatted as Hydra's help formats them."""
    lines, overrides_help = [], ""
    for action in get_args_parser()._actions:
        if action.option_strings:
            lines.append(f"{','.join(action.option_strings)} : {action.help}")
        else:
            overrides_help = action.help
    return "\n".join(lines) + "\nOverrides : " + overrides_help


def help_text(config_name: str, overrides: list[str]) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    template = str(cfg.hydra.help.template)  # resolves its header (the job name)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    return string.Template(template).substitute(
        FLAGS_HELP=flags_help(),
        HYDRA_CONFIG_GROUPS=config_groups(hydra_groups=True),
        APP_CONFIG_GROUPS=config_groups(hydra_groups=False),
        CONFIG=OmegaConf.to_yaml(cfg),
    )
