"""What a run directory records so the run can be understood and repeated later."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGES = ("clipad", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "open_clip_torch",
            "torchmetrics", "wandb", "albumentations", "numpy")


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def save_run_info(cfg: DictConfig, output_dir: Path) -> None:
    """config.yaml (resolved) and run_info.json (git commit, package versions) in the run dir."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    info = {"git_commit": git_commit(Path(__file__).resolve().parent), "packages": package_versions()}
    (output_dir / "run_info.json").write_text(json.dumps(info, indent=2))
