"""Import a released AdaCLIP reference checkpoint (caoyunkang/AdaCLIP) into AdaCLIPModule's state dict.

The reference file is `torch.save` of a flat dict whose keys start with `clip_model.`; its block-0
text prompt is never used by the reference and clipad has no such parameter, so it is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

REFERENCE_PREFIX = "clip_model."
EXAMPLE_KEY = "clip_model.visual_prompter.static_prompts.0"


def _text_prompt(match: re.Match) -> str | None:
    block = int(match[1])
    return None if block == 0 else f"text_static_prompts.tokens.{block - 1}"


# reference key (after the prefix) -> clipad key, or None for a parameter clipad drops
_RULES: list[tuple[re.Pattern, Callable[[re.Match], str | None]]] = [
    (re.compile(r"visual_prompter\.static_prompts\.(\d+)"), lambda m: f"image_static_prompts.tokens.{m[1]}"),
    (re.compile(r"text_prompter\.static_prompts\.(\d+)"), _text_prompt),
    (
        re.compile(r"patch_token_layer\.head\.(\d+)\.(weight|bias)"),
        lambda m: f"patch_projections.layers.{m[1]}.{m[2]}",
    ),
    (re.compile(r"cls_token_layer\.head\.0\.(weight|bias)"), lambda m: f"cls_projection.linear.{m[1]}"),
    (
        re.compile(r"dynamic_visual_prompt_generator\.head\.(\d+)\.(weight|bias)"),
        lambda m: f"image_prompt_generator.heads.{m[1]}.{m[2]}",
    ),
    (
        re.compile(r"dynamic_text_prompt_generator\.head\.(\d+)\.(weight|bias)"),
        lambda m: f"text_prompt_generator.heads.{m[1]}.{m[2]}",
    ),
]


def _clipad_key(reference_key: object) -> tuple[bool, str | None]:
    """(known, clipad key or None when dropped) for one reference key."""
    if not isinstance(reference_key, str) or not reference_key.startswith(REFERENCE_PREFIX):
        return False, None
    name = reference_key[len(REFERENCE_PREFIX) :]
    for pattern, rename in _RULES:
        match = pattern.fullmatch(name)
        if match:
            return True, rename(match)
    return False, None


def reference_to_clipad(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference's keys to AdaCLIPModule's (no shape check; see `convert_adaclip`)."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(
            f"not an AdaCLIP reference checkpoint: expected a non-empty flat dict of tensors with keys like "
            f"{EXAMPLE_KEY!r}, got {type(state_dict).__name__}"
        )
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        known, new_key = _clipad_key(key)
        if not known or not torch.is_tensor(value):
            unknown.append(str(key))
        elif new_key is not None:
            converted[new_key] = value
    if unknown:
        raise ValueError(
            f"not an AdaCLIP reference checkpoint: {len(unknown)} of {len(state_dict)} entries are not "
            f"AdaCLIP prompt/projection tensors, e.g. {unknown[:3]}; expected keys like {EXAMPLE_KEY!r}"
        )
    return converted


def convert_adaclip(state_dict: Mapping[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """The reference checkpoint as a state dict for `module` (an AdaCLIPModule), every key and shape checked.

    The module must be built with the checkpoint's settings (backbone, prompt type/branch/length/depth).
    """
    converted = reference_to_clipad(state_dict)
    expected = module.state_dict()
    missing = [key for key in expected if key not in converted]
    unexpected = [key for key in converted if key not in expected]
    if missing or unexpected:
        raise ValueError(
            "the AdaCLIP checkpoint does not match the model configuration (backbone and prompt.type/branch/"
            f"length/depth must be the checkpoint's): missing {missing}, unexpected {unexpected}"
        )
    wrong = [
        f"{key}: checkpoint {tuple(converted[key].shape)}, model {tuple(value.shape)}"
        for key, value in expected.items()
        if converted[key].shape != value.shape
    ]
    if wrong:
        raise ValueError(
            "the AdaCLIP checkpoint does not match the model configuration (backbone, prompt.length/depth): "
            + "; ".join(wrong)
        )
    return {key: converted[key].to(value.dtype) for key, value in expected.items()}
