"""Dataset configs by name (conf/data/<name>.yaml over conf/data/_common.yaml), roots and prompt names."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from clipad.config_dir import conf_dir
from clipad.errors import ClipadError, ConfigError


class DatasetError(ClipadError, RuntimeError):
    """A missing or malformed dataset root, an unknown or empty class/split: the message says what exists
    and how to fix it (expected layout, where the dataset is published: layout_help)."""


def dataset_names() -> list[str]:
    """Names accepted by `data=`: every conf/data/*.yaml except the shared `_common`-style files."""
    return sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml") if not p.stem.startswith("_"))


def load_dataset_config(name: str) -> DictConfig:
    """The data node `data=<name>` would compose: the file merged over the files its defaults list names.

    Interpolations stay unresolved (a dataset file may point at keys of the whole run config). Only plain
    entries of the data group are followed; overrides of other groups (`override /backbone: tiny`) belong to
    Hydra's composition of a whole run and are ignored here.
    """
    return _compose(name, seen=())


def _compose(name: str, seen: tuple[str, ...]) -> DictConfig:
    path = conf_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown dataset {name!r}: no {path}. Known datasets: {', '.join(dataset_names())}. "
            "Custom data: data=folder data.root=DIR, or data=meta data.meta_path=FILE."
        )
    if name in seen:
        raise ValueError(f"conf/data defaults form a cycle: {' -> '.join((*seen, name))}")
    own = OmegaConf.load(path)
    assert isinstance(own, DictConfig), f"{path} must hold a mapping"
    defaults = own.pop("defaults", None)
    entries = list(defaults) if isinstance(defaults, ListConfig) else []
    if "_self_" not in entries:
        entries.append("_self_")  # Hydra's rule: without `_self_` the file's own keys come last
    parts: list[DictConfig] = []
    for entry in entries:
        if entry == "_self_":
            parts.append(own)
        elif isinstance(entry, str) and not entry.startswith(("/", "override ")):
            parts.append(_compose(entry, (*seen, name)))
    merged = OmegaConf.merge(*parts)
    assert isinstance(merged, DictConfig)
    return merged


def dataset_root(data_cfg: DictConfig, data_dir: str | Path | None) -> Path:
    """Where a dataset lives: data.root if given, the meta file's folder for `meta`, else data_dir/dirname."""
    layout = data_cfg.get("layout")
    if layout == "meta":
        meta_path = data_cfg.get("meta_path")
        if not meta_path:
            raise ConfigError("data=meta needs the meta file: data.meta_path=/path/to/meta.json")
        meta = Path(str(meta_path)).expanduser()
        return meta if meta.is_dir() else meta.parent
    root = data_cfg.get("root")
    if root:
        return Path(str(root)).expanduser()
    if layout == "folder":
        raise ConfigError(
            "data=folder needs the folder: data.root=DIR with DIR/normal/, DIR/abnormal/ and optional DIR/masks/"
        )
    if data_dir is None:
        raise ConfigError(f"no data directory for dataset {data_cfg.get('name')!r}: set paths.data_dir")
    return Path(str(data_dir)).expanduser() / str(data_cfg.get("dirname", data_cfg.get("name")))


def prompt_name(data_cfg: DictConfig, cls_name: str) -> str:
    """The class name as it enters text prompts.

    faithful (default): the folder name with only "-" replaced by a space, as both reference codes pass it
    ("metal_nut" reaches the tokenizer unchanged); readable: the dataset's readable_names entry, else the
    folder name with "_" and "-" replaced by spaces.
    """
    mode = data_cfg.get("class_names", "faithful")
    if mode == "faithful":
        return cls_name.replace("-", " ")
    if mode == "readable":
        readable = data_cfg.get("readable_names") or {}
        return str(readable.get(cls_name, cls_name.replace("_", " ").replace("-", " ")))
    raise ConfigError(f"data.class_names must be faithful or readable, got {mode!r}")


def layout_help(data_cfg: DictConfig) -> str:
    """The expected layout and where the dataset is published, for error messages."""
    lines = [f"Expected layout of {data_cfg.get('name')!r}:"]
    lines += ["  " + line for line in str(data_cfg.get("expected_layout") or "(not documented)").strip().splitlines()]
    if data_cfg.get("url"):
        lines.append(f"Published at: {data_cfg.url} (licence: {data_cfg.get('licence', 'see the page')})")
    return "\n".join(lines)
