"""Import of reference AnomalyCLIP checkpoints: key layout, buffer checks, dead projections, round trip."""
from __future__ import annotations

import open_clip
import pytest
import torch
from test_commands import evaluate_converted

from clipad.cli.convert import convert
from clipad.cli.convert import main as convert_main
from clipad.cli.hydra_setup import compose_config
from clipad.models.anomalyclip.convert import convert_anomalyclip
from clipad.models.registry import build_module

TINY = ["backbone=tiny", "backbone.image_size=112"]
SENTENCES = ("X X X X X X X X X X X X object.", "X X X X X X X X X X X X damaged object.")  # the sheet's two


def tiny_module():
    return build_module(compose_config("train", ["model=anomalyclip", *TINY])).eval()


def reference_checkpoint(module, dead_width: int = 80) -> dict:
    """A file in the reference's format (the sheet's key list) holding `module`'s prompts, made random first."""
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in module.prompts.parameters():
            parameter.normal_()
    width, prompts = module.backbone.text_width, module.prompts
    ids = open_clip.tokenize(list(SENTENCES))  # [2, 77]
    embeddings = module.backbone.clip.token_embedding(ids).detach()
    state = {"ctx_pos": prompts.ctx_normal.detach().reshape(1, 1, 12, width).clone(),
             "ctx_neg": prompts.ctx_anomalous.detach().reshape(1, 1, 12, width).clone()}
    for row, name in enumerate(("pos", "neg")):
        state[f"token_prefix_{name}"] = embeddings[row, :1].reshape(1, 1, 1, width).clone()
        state[f"token_suffix_{name}"] = embeddings[row, 13:].reshape(1, 1, 64, width).clone()
        state[f"tokenized_prompts_{name}"] = ids[row].reshape(1, 1, 77).to(torch.int32)
    for index, deep in enumerate(prompts.deep):
        state[f"compound_prompts_text.{index}"] = deep.detach().clone()
        state[f"compound_prompt_projections.{index}.weight"] = torch.randn(dead_width, width)
        state[f"compound_prompt_projections.{index}.bias"] = torch.randn(dead_width)
    return {"prompt_learner": state}


def test_round_trip_is_exact_and_the_import_evaluates(tmp_path, synthetic_data_dir, capsys):
    original = tiny_module()
    source, target = tmp_path / "epoch_15.pth", tmp_path / "anomalyclip.ckpt"
    torch.save(reference_checkpoint(original), source)
    convert("anomalyclip", source, target, TINY)
    assert "dropped compound_prompt_projections.* (3 Linear layers, 15,600 values)" in capsys.readouterr().out
    saved = torch.load(target, weights_only=True)
    expected = original.state_dict()
    assert sorted(saved["state_dict"]) == sorted(expected)
    assert all(torch.equal(saved["state_dict"][k], expected[k]) for k in expected)
    imported = tiny_module()
    imported.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        assert torch.equal(imported.text_features(), original.text_features())
    assert evaluate_converted(target, tmp_path, synthetic_data_dir) is not None
    assert (tmp_path / "eval" / "results.csv").is_file()


def edited(reference: dict, key: str, value=None) -> dict:
    state = dict(reference["prompt_learner"])
    if value is None:
        del state[key]
    else:
        state[key] = value
    return {"prompt_learner": state}


@pytest.mark.parametrize("edit, message", [
    (lambda r: edited(r, "compound_prompts_text.1"), "missing"),
    (lambda r: edited(r, "ctx_pos", torch.zeros(1, 1, 8, 64)), "wrong shapes"),
    (lambda r: edited(r, "extra", torch.zeros(1)), "unexpected"),
    (lambda r: edited(r, "compound_prompt_projections.0.bias", torch.zeros(3)), "compound_prompt_projections.0.bias"),
    (lambda r: edited(r, "token_suffix_neg", r["prompt_learner"]["token_suffix_neg"] + 1e-3), "another CLIP"),
    (lambda r: edited(r, "tokenized_prompts_pos", r["prompt_learner"]["tokenized_prompts_neg"]), "other sentences"),
    (lambda r: {"model": r["prompt_learner"]}, "prompt_learner"),
])
def test_files_that_do_not_fit_are_refused(edit, message):
    module = tiny_module()
    reference = reference_checkpoint(module)
    with pytest.raises(ValueError, match=message):
        convert_anomalyclip(edit(reference), module)


def test_the_command_reports_a_foreign_file_in_one_line(tmp_path, capsys):
    source = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, source)
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["anomalyclip", str(source), str(tmp_path / "out.ckpt"), *TINY])
    assert exit_info.value.code == 2
    assert "prompt_learner" in capsys.readouterr().err
