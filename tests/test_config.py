"""Every option of every config group composes and resolves; typos and misplaced groups are errors."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from clipad.cli.hydra_setup import compose_config
from clipad.config_dir import CONF_DIR

MODEL_OF_GROUP = {"prompt": "adaclip", "adapter": "adaptclip"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def compose_resolved(config_name: str, overrides: list[str]):
    cfg = compose_config(config_name, overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    return cfg


CASES = [
    (group, option)
    for group in ("backbone", "model", "prompt", "adapter", "data", "trainer", "logger", "callbacks", "debug",
                  "experiment")
    for option in options(group)
]


@pytest.mark.parametrize("group, option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group in MODEL_OF_GROUP:
        overrides.insert(0, f"model={MODEL_OF_GROUP[group]}")
    cfg = compose_resolved("train", overrides)
    if group in ("backbone", "model", "data"):
        assert cfg[group].name  # the option is really selected
    if group == "data" and option != "synthetic":
        assert cfg.data.name == option


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_entry_configs_compose(config_name):
    cfg = compose_config(config_name, ["ckpt_path=x.ckpt"] if config_name == "eval" else [])
    assert {"paths", "backbone", "model", "data", "trainer"} <= set(cfg)


def test_synthetic_target_selects_tiny_backbone_unless_told_otherwise():
    assert compose_config("train", []).backbone.name == "clipad-tiny"
    assert compose_config("train", ["backbone=vit_b16"]).backbone.name == "ViT-B-16"
    assert compose_config("train", ["data=mvtec"]).backbone.name == "ViT-L-14-336"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["modle=clip"], "modle"),
        (["data.batchsize=3"], "batchsize"),
        (["model=adaptclip", "prompt=static"], "prompt"),
        (["model=adaptclip", "prompt.length=3"], "prompt"),
        (["model=adaclip", "adapter=visual"], "adapter"),
        (["backbone=vit_xl"], "vit_xl"),
    ],
)
def test_typos_and_wrong_groups_are_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("train", overrides)
    assert message in str(error.value)
