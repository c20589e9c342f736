"""Import of reference AdaptCLIP checkpoints: key mapping, shared-head copies, BatchNorm statistics, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from clipad.models.adaptclip import AdaptCLIPAdapters, AdaptCLIPModule, AdapterChoice
from clipad.models.adaptclip.convert import adapters_in, reference_to_clipad

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL = AdapterChoice(visual=True, textual=True, prompt_query=True)
LAYERS = 4


def randomised_adapters(width: int = 64) -> AdaptCLIPAdapters:
    """Adapters whose every parameter and BatchNorm statistic is random (so a dropped tensor shows)."""
    torch.manual_seed(0)
    adapters = AdaptCLIPAdapters(width, width, LAYERS, ALL)
    with torch.no_grad():
        for name, tensor in adapters.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(123)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            else:
                tensor.normal_()
    return adapters


def reference_layout(adapters: AdaptCLIPAdapters) -> dict[str, dict[str, torch.Tensor]]:
    """The same tensors under the reference's key names (from the reference sheet's key list)."""
    state = adapters.state_dict()
    width = state["textual.ctx_normal"].shape[1]
    textual = {
        "ctx_pos": state["textual.ctx_normal"].reshape(1, 1, 12, width),
        "ctx_neg": state["textual.ctx_anomalous"].reshape(1, 1, 12, width),
    }
    for label in ("pos", "neg"):
        textual[f"token_prefix_{label}"] = torch.zeros(1, 1, width)
        textual[f"token_suffix_{label}"] = torch.zeros(1, 64, width)
        textual[f"tokenized_prompts_{label}"] = torch.zeros(1, 77, dtype=torch.long)
    visual = {
        k.removeprefix("visual.").replace("local_adapter", "local_adater"): v
        for k, v in state.items()
        if k.startswith("visual.")
    }
    pq: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("prompt_query.layer_bn."):
            pq["sharebn." + key.removeprefix("prompt_query.layer_bn.")] = value
        for ours, theirs in (("map_head", "local_adapter"), ("score_head", "global_adapter")):
            if key.startswith(f"prompt_query.{ours}."):
                for layer in range(LAYERS):  # the reference repeats the shared head per layer
                    pq[f"{theirs}.{layer}.{key.removeprefix(f'prompt_query.{ours}.')}"] = value.clone()
    return {"textual_learner": textual, "visual_learner": visual, "pq_learner": pq}


def test_reference_key_layout_matches_the_sheet():
    ref = reference_layout(randomised_adapters())

    def indices(part: str, prefix: str) -> set[str]:
        return {k.removeprefix(prefix).split(".")[0] for k in ref[part] if k.startswith(prefix)}

    assert indices("visual_learner", "global_adapter.fc.") == {"0", "1", "3"}
    assert indices("visual_learner", "local_adater.fc.") == {"0", "1", "3"}
    assert indices("pq_learner", "local_adapter.2.") == {"0", "1", "3", "4", "5", "7", "8"}
    assert indices("pq_learner", "global_adapter.3.") == {"0", "1", "3", "4", "6"}
    assert indices("pq_learner", "sharebn.") == {"0", "1", "2", "3"}


def test_conversion_recovers_every_tensor_including_batchnorm_statistics():
    adapters = randomised_adapters()
    converted = reference_to_clipad(reference_layout(adapters))
    expected = {f"adapters.{k}": v for k, v in adapters.state_dict().items()}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert int(converted["adapters.visual.local_adapter.fc.1.num_batches_tracked"]) == 123
    assert adapters_in(converted) == {"visual": True, "textual": True, "prompt_query": True}


def test_converted_state_loads_into_the_module(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["model=adaptclip", "backbone=tiny", "data=mvtec", f"paths.output_dir={tmp_path}"],
        )
    module = AdaptCLIPModule(cfg)
    converted = reference_to_clipad(reference_layout(randomised_adapters(module.backbone.embed_dim)))
    module.load_state_dict(converted)  # strict: every adapter key present, nothing extra
    assert torch.equal(
        module.adapters.prompt_query.map_head[8].bias, converted["adapters.prompt_query.map_head.8.bias"]
    )


def test_partial_checkpoint_converts_to_the_adapters_it_holds():
    ref = reference_layout(randomised_adapters())
    converted = reference_to_clipad(
        {"textual_learner": ref["textual_learner"], "visual_learner": ref["visual_learner"]}
    )
    assert adapters_in(converted) == {"visual": True, "textual": True, "prompt_query": False}


def test_unequal_copies_of_the_shared_head_are_refused():
    ref = reference_layout(randomised_adapters())
    ref["pq_learner"]["local_adapter.2.0.weight"] += 1.0
    with pytest.raises(ValueError, match="differ"):
        reference_to_clipad(ref)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ref: {"state_dict": ref["visual_learner"]}, "expected top-level keys"),
        (lambda ref: [ref], "expected a dict"),
        (lambda ref: {**ref, "optimizer": {}}, "expected top-level keys"),
        (
            lambda ref: {"visual_learner": {**ref["visual_learner"], "head.weight": torch.zeros(2)}},
            "unexpected key",
        ),
        (
            lambda ref: {
                "visual_learner": {**ref["visual_learner"], "global_adapter.fc.3.weight": torch.zeros(64, 8)}
            },
            "wrong shapes",
        ),
        (
            lambda ref: {
                "textual_learner": {
                    "ctx_pos": torch.zeros(2, 1, 12, 64),
                    "ctx_neg": torch.zeros(1, 1, 12, 64),
                }
            },
            "ctx_pos",
        ),
        (lambda ref: {"pq_learner": {}}, "no adapter tensors"),
    ],
)
def test_foreign_files_are_refused_with_a_clear_message(edit, message):
    ref = reference_layout(randomised_adapters())
    with pytest.raises(ValueError, match=message) as error:
        reference_to_clipad(edit(ref))
    assert "not a reference AdaptCLIP checkpoint" in str(error.value)
