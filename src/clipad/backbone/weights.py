"""Finding pretrained CLIP weights on disk, failing fast and clearly when they cannot be had.

open_clip's own download goes through huggingface_hub, which retries for about 47 s on a machine
without network before it gives up. clipad looks in the caches first and probes the hub with a short
timeout, so a missing file is one clear error within seconds.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import open_clip

from clipad.errors import ClipadError

HUB_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(ClipadError, RuntimeError):
    """Pretrained weights are neither on disk nor downloadable now."""


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """Repository id and the file names open_clip would fetch for an `org/repo/[file]` entry."""
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]
    if filename == "open_clip_pytorch_model.bin":
        names.insert(0, "open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    return repo_id, names


def _cached_hf_file(repo_id: str, names: list[str], cache_dirs: list[Path | None]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for cache_dir in cache_dirs:
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    return None


def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def resolve_pretrained(model_name: str, tag: str, cache_dir: Path) -> str:
    """Return what to pass as open_clip's `pretrained`: a local file when one is cached, else the tag.

    Raises WeightsUnavailableError at once when the file is not on disk and the hub cannot be reached.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"open_clip has no pretrained tag {tag!r} for {model_name!r}; known tags: {known}. "
            "Set backbone.pretrained to one of them, or backbone.checkpoint=/path/to/file."
        )
    if "file" in cfg:
        return cfg["file"]
    cache_dirs: list[Path | None] = [cache_dir, None]  # None = huggingface_hub's default cache
    wanted: list[str] = []
    if cfg.get("hf_hub"):
        repo_id, names = _hf_candidates(cfg["hf_hub"])
        found = _cached_hf_file(repo_id, names, cache_dirs)
        if found:
            return str(found)
        wanted.append(f"{names[-1]} from the Hugging Face repository {repo_id}")
    if cfg.get("url"):
        filename = os.path.basename(cfg["url"])
        for folder in (cache_dir, Path("~/.cache/clip").expanduser()):
            if (folder / filename).is_file():
                return str(folder / filename)
        wanted.append(f"{filename} from {cfg['url']}")
    if hub_reachable():
        return tag
    raise WeightsUnavailableError(
        f"Pretrained weights for {model_name} ({tag}) are not on this machine and the hub "
        f"({HUB_HOST}) cannot be reached.\nMissing file: {' or '.join(wanted)}.\n"
        "Supply it in one of two ways:\n"
        f"  1. backbone.checkpoint=/path/to/that/file (a local open_clip or OpenAI checkpoint), or\n"
        f"  2. put it in the cache directory {cache_dir} (set by paths.weights_dir / env CLIPAD_WEIGHTS), "
        f"e.g. on a machine with network: huggingface-cli download {cfg.get('hf_hub', '').rstrip('/')} "
        f"--cache-dir {cache_dir}  (then copy that directory here)."
    )
