"""Pretrained weights: found in the caches when present, one fast clear error when not (no network here)."""
from __future__ import annotations

import time

import pytest
import torch
from omegaconf import OmegaConf

from clipad.backbone import WeightsUnavailableError, build_backbone
from clipad.backbone.weights import resolve_pretrained


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "weights"


def test_missing_weights_fail_fast_with_both_remedies(empty_caches):
    cfg = OmegaConf.create({"name": "ViT-B-32", "pretrained": "openai", "image_size": 224})
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone(cfg, quick_gelu=True, pos_embed_interp="bicubic", weights_dir=empty_caches)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "open_clip_pytorch_model.bin" in message or "ViT-B-32.pt" in message  # the missing file is named
    assert "backbone.checkpoint=" in message and str(empty_caches) in message  # and both ways to supply it


def test_missing_local_checkpoint_is_named(tmp_path):
    cfg = OmegaConf.create({"name": "clipad-tiny", "checkpoint": str(tmp_path / "nope.pt"), "image_size": 224})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_backbone(cfg, quick_gelu=False, pos_embed_interp="bicubic")


def test_unknown_tag_lists_known_tags(empty_caches):
    with pytest.raises(ValueError, match="known tags"):
        resolve_pretrained("ViT-B-32", "no-such-tag", empty_caches)


def test_cached_hub_file_is_used_without_network(empty_caches):
    """A file laid out as huggingface_hub caches it is found and loaded; nothing is downloaded."""
    repo_dir = empty_caches / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo_dir / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123abc")
    weights = snapshot / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"placeholder")
    assert resolve_pretrained("ViT-B-32", "openai", empty_caches) == str(weights)


def test_local_checkpoint_file_loads(tmp_path):
    """backbone.checkpoint loads a local state dict (here: the tiny model's own random weights)."""
    cfg = OmegaConf.create({"name": "clipad-tiny", "allow_random": True, "image_size": 224})
    torch.manual_seed(1)
    source = build_backbone(cfg, quick_gelu=False, pos_embed_interp="bicubic")
    path = tmp_path / "tiny.pt"
    torch.save(source.clip.state_dict(), path)
    loaded = build_backbone(OmegaConf.create({"name": "clipad-tiny", "checkpoint": str(path), "image_size": 224}),
                            quick_gelu=False, pos_embed_interp="bicubic")
    assert not loaded.is_random
    assert torch.equal(loaded.clip.visual.conv1.weight, source.clip.visual.conv1.weight)
