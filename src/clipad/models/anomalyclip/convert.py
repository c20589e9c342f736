"""Import a released reference AnomalyCLIP checkpoint into clipad's `AnomalyCLIPModule` state dict.

The reference saves `{"prompt_learner": state_dict}` holding the learnt context (`ctx_pos`, `ctx_neg`,
[1, 1, n, width]) and deep prompts (`compound_prompts_text.{i}`, [length, width]), buffers that clipad
derives from CLIP instead of storing them (`token_prefix_*`, `token_suffix_*`: token embeddings of the two
sentences; `tokenized_prompts_*`: their token ids), and `compound_prompt_projections.{i}`, Linear layers the
reference registers but never calls. Every key and shape is checked; the buffers are rebuilt from the
configured CLIP and must match (they would not for another CLIP or other sentences); the dead projections
are dropped with a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

import torch

from clipad.models.anomalyclip.module import AnomalyCLIPModule
from clipad.models.anomalyclip.prompts import prompt_sentences

TOP_KEY = "prompt_learner"
DEAD_KEY = re.compile(r"^compound_prompt_projections\.(\d+)\.(weight|bias)$")
SENTENCES = ("pos", "neg")  # the reference's names of the normal and the anomalous sentence
BUFFER_TOLERANCE = 1e-6  # token embeddings are copies of CLIP's weights: equal up to a dtype round trip


def _fail(message: str) -> NoReturn:
    raise ValueError(f"not a reference AnomalyCLIP checkpoint: {message}")


def reference_layout(module: AnomalyCLIPModule) -> dict[str, tuple[int, ...]]:
    """Key -> shape of everything but the dead projections, for a module of this configuration."""
    prompts, n = module.prompts, module.prompts.context_tokens
    width, length = module.backbone.text_width, module.sentence_token_ids.shape[1]
    layout: dict[str, tuple[int, ...]] = {}
    for name in SENTENCES:
        layout[f"ctx_{name}"] = (1, 1, n, width)
        layout[f"token_prefix_{name}"] = (1, 1, 1, width)
        layout[f"token_suffix_{name}"] = (1, 1, length - 1 - n, width)
        layout[f"tokenized_prompts_{name}"] = (1, 1, length)
    for index, deep in enumerate(prompts.deep):
        layout[f"compound_prompts_text.{index}"] = tuple(deep.shape)
    return layout


def _dead_projections(state: Mapping[str, torch.Tensor], text_width: int) -> int:
    """Check the dead projections' shapes (Linear(text_width -> any)); return how many values they hold."""
    shapes = {key: tuple(value.shape) for key, value in state.items() if DEAD_KEY.match(key)}
    for key, shape in shapes.items():
        index, leaf = DEAD_KEY.match(key).groups()
        weight = shapes.get(f"compound_prompt_projections.{index}.weight")
        if weight is None or len(weight) != 2 or weight[1] != text_width:
            _fail(f"{key} has no matching weight [out, {text_width}]")
        if leaf == "bias" and shape != (weight[0],):
            _fail(f"{key} has shape {shape}; expected ({weight[0]},)")
    return sum(state[key].numel() for key in shapes)


@torch.no_grad()
def _check_buffers(state: Mapping[str, torch.Tensor], module: AnomalyCLIPModule) -> None:
    """The stored token ids and token embeddings must equal the configured CLIP's for the two sentences."""
    token_ids = module.sentence_token_ids
    embeddings = module.backbone.clip.token_embedding(token_ids.to(module.backbone.clip.token_embedding.weight.device))
    n = module.prompts.context_tokens
    for row, name in enumerate(SENTENCES):
        stored_ids = state[f"tokenized_prompts_{name}"].reshape(-1).long().cpu()
        if not torch.equal(stored_ids, token_ids[row].long()):
            sentence = prompt_sentences(module.prompts.context_tokens)[row]
            raise ValueError(f"tokenized_prompts_{name} is not the token ids of {sentence!r}: "
                             "the checkpoint was trained with other sentences")
        for key, expected in ((f"token_prefix_{name}", embeddings[row, :1]),
                              (f"token_suffix_{name}", embeddings[row, 1 + n :])):
            stored = state[key].reshape(expected.shape).float().cpu()
            difference = float((stored - expected.float().cpu()).abs().max())
            if difference > BUFFER_TOLERANCE:
                raise ValueError(
                    f"{key} differs from the configured CLIP's token embeddings (max |diff| {difference:.3g}): "
                    "the checkpoint was trained on another CLIP; choose its backbone (backbone=..., "
                    "backbone.pretrained/checkpoint)"
                )


def convert_anomalyclip(checkpoint: Mapping, module: AnomalyCLIPModule) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(clipad state dict, notes for the user). `module` must hold the CLIP the checkpoint was trained on.

    Raises ValueError naming the first key or shape that does not fit.
    """
    if not isinstance(checkpoint, Mapping) or set(checkpoint) != {TOP_KEY}:
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        _fail(f"expected a dict with the one key {TOP_KEY!r}, found {found} "
              "(a clipad/Lightning checkpoint loads with ckpt_path=... instead)")
    state = checkpoint[TOP_KEY]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        _fail(f"{TOP_KEY} is not a state dict of tensors")
    expected = reference_layout(module)
    live = {key: value for key, value in state.items() if not DEAD_KEY.match(key)}
    missing = sorted(set(expected) - set(live))
    unexpected = sorted(set(live) - set(expected))
    wrong = [f"{k}: {tuple(live[k].shape)} (expected {expected[k]})"
             for k in sorted(set(expected) & set(live)) if tuple(live[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        _fail(f"missing {missing}, unexpected {unexpected}, wrong shapes {wrong} (for the configured model: "
              "model.context_tokens, model.deep_prompt_depth/length and the backbone set the shapes)")
    dead_values = _dead_projections(state, module.backbone.text_width)
    _check_buffers(state, module)
    converted = {
        "prompts.ctx_normal": state["ctx_pos"][0, 0],
        "prompts.ctx_anomalous": state["ctx_neg"][0, 0],
        **{f"prompts.deep.{i}": state[f"compound_prompts_text.{i}"] for i in range(len(module.prompts.deep))},
    }
    notes = ["token_prefix/token_suffix/tokenized_prompts (pos, neg) match the configured CLIP: not stored"]
    if dead_values:
        projections = len({DEAD_KEY.match(k).group(1) for k in state if DEAD_KEY.match(k)})
        notes.append(f"dropped compound_prompt_projections.* ({projections} Linear layers, {dead_values:,} values): "
                     "the reference registers them but never calls them (AnomalyCLIP issue #102)")
    return {key: value.detach().float().clone() for key, value in converted.items()}, notes
