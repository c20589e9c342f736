"""Import a released reference AdaptCLIP checkpoint into clipad's `AdaptCLIPModule` state dict.

The reference saves `{"textual_learner": sd, "visual_learner": sd, "pq_learner": sd}`. Its prompt-query
state dict repeats the shared heads under indices 0..3 (one copy per feature layer); the copies
must be equal and one is kept. Its visual adapter spells the local adapter `local_adater`.
BatchNorm running statistics are kept. Every converted tensor is checked against a freshly built
`AdaptCLIPAdapters` of the sizes the checkpoint implies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

import torch

from clipad.models.adaptclip.module import AdaptCLIPAdapters, AdapterChoice

PARTS = ("textual_learner", "visual_learner", "pq_learner")
PREFIX = "adapters."
# Textual-learner buffers clipad derives from the tokenizer instead of storing them.
TEXT_BUFFERS = ("token_prefix", "token_suffix", "tokenized_prompts")
VISUAL_KEY = re.compile(r"^(global_adapter|local_adater|local_adapter)\.fc\.(\d+)\.(\w+)$")
PQ_BN_KEY = re.compile(r"^sharebn\.(\d+)\.(\w+)$")
PQ_HEAD_KEY = re.compile(r"^(local_adapter|global_adapter)\.(\d+)\.(\d+)\.(\w+)$")
PQ_HEADS = {"local_adapter": "map_head", "global_adapter": "score_head"}


def _fail(message: str) -> NoReturn:
    raise ValueError(f"not a reference AdaptCLIP checkpoint: {message}")


def _textual(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key in ("ctx_pos", "ctx_neg"):
            if value.ndim < 2 or any(size != 1 for size in value.shape[:-2]):
                _fail(f"textual_learner.{key} has shape {tuple(value.shape)}; expected [1, 1, n, width]")
            name = "ctx_normal" if key == "ctx_pos" else "ctx_anomalous"
            out[f"{PREFIX}textual.{name}"] = value.reshape(value.shape[-2:])
        elif not key.startswith(TEXT_BUFFERS):
            _fail(f"unexpected key textual_learner.{key}")
    if len(out) != 2:
        _fail("textual_learner lacks ctx_pos or ctx_neg")
    return out


def _visual(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        match = VISUAL_KEY.match(key)
        if match is None:
            _fail(f"unexpected key visual_learner.{key}")
        branch, index, leaf = match.groups()
        branch = "global_adapter" if branch == "global_adapter" else "local_adapter"  # the reference's typo
        out[f"{PREFIX}visual.{branch}.fc.{index}.{leaf}"] = value
    return out


def _prompt_query(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    copies: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        if match := PQ_BN_KEY.match(key):
            layer, leaf = match.groups()
            out[f"{PREFIX}prompt_query.layer_bn.{layer}.{leaf}"] = value
        elif match := PQ_HEAD_KEY.match(key):
            head, layer, index, leaf = match.groups()
            copies.setdefault(f"{PREFIX}prompt_query.{PQ_HEADS[head]}.{index}.{leaf}", {})[int(layer)] = value
        else:
            _fail(f"unexpected key pq_learner.{key}")
    for name, per_layer in copies.items():
        layers = sorted(per_layer)
        first = per_layer[layers[0]]
        for layer in layers[1:]:
            other = per_layer[layer]
            if other.shape != first.shape or not torch.equal(other, first):
                raise ValueError(
                    f"pq_learner: the copies of the shared head tensor {name.removeprefix(PREFIX)} under indices "
                    f"{layers[0]} and {layer} differ; the reference shares one head across layers, so this file "
                    "is not a reference AdaptCLIP checkpoint (or it was edited)"
                )
        out[name] = first
    return out


def _expected_state(converted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict (shapes only, on meta) of the adapters that the converted tensors imply."""

    def first(suffix: str) -> torch.Tensor | None:
        return converted.get(PREFIX + suffix)

    choice = AdapterChoice(
        visual=any(k.startswith(PREFIX + "visual.") for k in converted),
        textual=any(k.startswith(PREFIX + "textual.") for k in converted),
        prompt_query=any(k.startswith(PREFIX + "prompt_query.") for k in converted),
    )
    ctx = first("textual.ctx_normal")
    embed = first("visual.global_adapter.fc.0.weight")
    if embed is None:
        embed = first("prompt_query.score_head.0.weight")
    embed_dim = int(embed.shape[1]) if embed is not None else int(ctx.shape[1])
    num_layers = len({k.split(".")[3] for k in converted if k.startswith(PREFIX + "prompt_query.layer_bn.")})
    with torch.device("meta"):
        adapters = AdaptCLIPAdapters(
            embed_dim=embed_dim,
            text_width=int(ctx.shape[1]) if ctx is not None else embed_dim,
            num_layers=max(num_layers, 1),
            choice=choice,
            context_tokens=int(ctx.shape[0]) if ctx is not None else 12,
        )
    return {PREFIX + k: v for k, v in adapters.state_dict().items()}


def reference_to_clipad(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Convert the reference's `{"textual_learner", "visual_learner", "pq_learner"}` dict.

    Returns an `AdaptCLIPModule` state dict (keys `adapters.visual.*`, `adapters.textual.*`,
    `adapters.prompt_query.*` for the parts present). Raises ValueError for anything else.
    """
    if not isinstance(checkpoint, Mapping):
        _fail(f"expected a dict with keys {list(PARTS)}, got {type(checkpoint).__name__}")
    keys = set(checkpoint)
    if not keys & set(PARTS) or keys - set(PARTS):
        _fail(
            f"expected top-level keys among {list(PARTS)}, found {sorted(map(str, keys))[:8]} "
            "(a clipad/Lightning checkpoint loads with ckpt_path=... instead)"
        )
    for part in keys:
        if not isinstance(checkpoint[part], Mapping) or not all(
            isinstance(v, torch.Tensor) for v in checkpoint[part].values()
        ):
            _fail(f"{part} is not a state dict of tensors")
    converted: dict[str, torch.Tensor] = {}
    if "textual_learner" in checkpoint:
        converted.update(_textual(checkpoint["textual_learner"]))
    if "visual_learner" in checkpoint:
        converted.update(_visual(checkpoint["visual_learner"]))
    if "pq_learner" in checkpoint:
        converted.update(_prompt_query(checkpoint["pq_learner"]))
    if not converted:
        _fail("it holds no adapter tensors")
    expected = _expected_state(converted)
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [
        f"{k}: {tuple(converted[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(converted))
        if converted[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        _fail(f"missing {missing}, unexpected {unexpected}, wrong shapes {wrong}")
    return {k: v.detach().clone() for k, v in converted.items()}


def adapters_in(state: Mapping[str, torch.Tensor]) -> dict[str, bool]:
    """Which adapters a converted state dict holds: the values of the `adapter` config group."""
    return {
        name: any(k.startswith(f"{PREFIX}{name}.") for k in state)
        for name in ("visual", "textual", "prompt_query")
    }
