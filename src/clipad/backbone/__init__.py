"""Frozen CLIP backbones over open_clip, with hooks where prompts enter and an optional v-v attention path."""
from clipad.backbone.clip_backbone import ClipBackbone, ImageFeatures, build_backbone
from clipad.backbone.weights import WeightsUnavailableError

__all__ = ["ClipBackbone", "ImageFeatures", "build_backbone", "WeightsUnavailableError"]
