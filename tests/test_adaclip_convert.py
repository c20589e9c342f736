"""Import of released AdaCLIP reference checkpoints: key mapping, shape checks, refusal of other files."""

from __future__ import annotations

import pytest
import torch
from test_adaclip import make_module

from clipad.data.batch import Batch
from clipad.models.adaclip.convert import convert_adaclip, reference_to_clipad


def reference_checkpoint(
    width: int, text_width: int, embed: int, length: int = 5, depth: int = 4, layers: int = 4
) -> dict[str, torch.Tensor]:
    """A state dict with the reference's key names and shapes (as its `save` writes them), random values."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state: dict[str, torch.Tensor] = {}
    for block in range(depth):  # block 0 of the text prompts exists but is never used
        state[f"clip_model.text_prompter.static_prompts.{block}"] = tensor(length, text_width)
        state[f"clip_model.visual_prompter.static_prompts.{block}"] = tensor(length, width)
    for layer in range(layers):
        state[f"clip_model.patch_token_layer.head.{layer}.weight"] = tensor(embed, width)
        state[f"clip_model.patch_token_layer.head.{layer}.bias"] = tensor(embed)
    state["clip_model.cls_token_layer.head.0.weight"] = tensor(embed, embed)
    state["clip_model.cls_token_layer.head.0.bias"] = tensor(embed)
    for token in range(length):
        state[f"clip_model.dynamic_visual_prompt_generator.head.{token}.weight"] = tensor(width, embed)
        state[f"clip_model.dynamic_visual_prompt_generator.head.{token}.bias"] = tensor(width)
        state[f"clip_model.dynamic_text_prompt_generator.head.{token}.weight"] = tensor(text_width, embed)
        state[f"clip_model.dynamic_text_prompt_generator.head.{token}.bias"] = tensor(text_width)
    return state


def source_key(clipad_key: str) -> str:
    """The reference key a clipad key must come from, written out independently of convert.py's rules."""
    parts = clipad_key.split(".")
    if parts[0] == "image_static_prompts":
        return f"clip_model.visual_prompter.static_prompts.{parts[2]}"
    if parts[0] == "text_static_prompts":
        return f"clip_model.text_prompter.static_prompts.{int(parts[2]) + 1}"
    if parts[0] == "patch_projections":
        return f"clip_model.patch_token_layer.head.{parts[2]}.{parts[3]}"
    if parts[0] == "cls_projection":
        return f"clip_model.cls_token_layer.head.0.{parts[2]}"
    generator = {"image_prompt_generator": "dynamic_visual", "text_prompt_generator": "dynamic_text"}[
        parts[0]
    ]
    return f"clip_model.{generator}_prompt_generator.head.{parts[2]}.{parts[3]}"


def test_tiny_reference_checkpoint_loads_and_every_parameter_equals_its_source(tmp_path):
    module = make_module()
    reference = reference_checkpoint(width=64, text_width=64, embed=64)
    torch.save(reference, tmp_path / "reference.pth")
    converted = convert_adaclip(torch.load(tmp_path / "reference.pth", weights_only=True), module)
    assert list(converted) == list(module.state_dict())
    module.load_state_dict(converted)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, reference[source_key(key)], rtol=0, atol=0)
    batch = Batch(
        image=torch.randn(1, 3, 224, 224),
        mask=torch.zeros(1, 1, 224, 224),
        has_mask=torch.ones(1, dtype=torch.bool),
        label=torch.zeros(1, dtype=torch.long),
        cls_name=["bottle"],
        prompt_name=["bottle"],
        dataset=["mvtec"],
        path=["x.png"],
    )
    with torch.no_grad():  # the imported model runs
        assert torch.isfinite(module.eval()(batch).score).all()


def test_vit_l_reference_checkpoint_shapes_convert_exactly():
    module = make_module(
        "backbone.pretrained=null", "backbone.allow_random=true", backbone="vit_l14_336", device="meta"
    )
    reference = reference_checkpoint(width=1024, text_width=768, embed=768)
    assert sum(t.numel() for t in reference.values()) == 10_665_472  # the released files' count
    converted = convert_adaclip(reference, module)
    assert sum(t.numel() for t in converted.values()) == 10_661_632  # minus the unused block-0 text prompt
    assert "clip_model.text_prompter.static_prompts.0" in reference
    for key, value in converted.items():
        assert torch.equal(value, reference[source_key(key)]), key


def test_reference_to_clipad_drops_only_the_unused_text_prompt():
    reference = reference_checkpoint(width=64, text_width=64, embed=64)
    converted = reference_to_clipad(reference)
    assert len(converted) == len(reference) - 1
    assert "text_static_prompts.tokens.2" in converted and "text_static_prompts.tokens.3" not in converted
    assert converted["text_static_prompts.tokens.0"] is reference["clip_model.text_prompter.static_prompts.1"]


@pytest.mark.parametrize(
    "foreign",
    [
        {"visual.proj": torch.zeros(2, 2), "logit_scale": torch.zeros(())},  # an open_clip CLIP file
        {"state_dict": {"clip_model.visual_prompter.static_prompts.0": torch.zeros(5, 64)}},  # nested
        {"clip_model.visual_prompter.static_prompts.0": [1, 2]},  # not a tensor
        {},
        [torch.zeros(1)],
    ],
)
def test_foreign_files_are_refused(foreign):
    with pytest.raises(ValueError, match="not an AdaCLIP reference checkpoint"):
        reference_to_clipad(foreign)


def test_checkpoint_of_other_settings_is_refused_with_the_mismatch():
    module = make_module()
    wider = reference_checkpoint(width=128, text_width=64, embed=64)  # e.g. trained on another backbone
    with pytest.raises(
        ValueError, match=r"image_static_prompts.tokens.0: checkpoint \(5, 128\), model \(5, 64\)"
    ):
        convert_adaclip(wider, module)
    reference = reference_checkpoint(width=64, text_width=64, embed=64)
    with pytest.raises(ValueError, match=r"unexpected \['image_prompt_generator.heads.3.weight'"):
        convert_adaclip(reference, make_module("prompt.length=3"))
    with pytest.raises(ValueError, match="unexpected"):
        convert_adaclip(reference, make_module("prompt=static"))
    with pytest.raises(ValueError, match=r"missing \['image_static_prompts.tokens.0'"):
        convert_adaclip({k: v for k, v in reference.items() if "visual_prompter" not in k}, module)
