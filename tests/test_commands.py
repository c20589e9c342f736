"""The user-facing commands: summary counts, conversion of reference checkpoints, evaluation of the result."""
from __future__ import annotations

import pytest
import torch
from test_adaclip_convert import reference_checkpoint
from test_adaptclip_convert import randomised_adapters, reference_layout

from clipad.cli.convert import convert
from clipad.cli.convert import main as convert_main
from clipad.cli.evaluate import evaluate
from clipad.cli.hydra_setup import compose_config
from clipad.cli.summary import main as summary_main


@pytest.mark.parametrize(
    "overrides, count",
    [
        (["model=adaclip", "backbone=vit_l14_336", "backbone.allow_random=true"], 10661632),
        (["model=adaptclip", "backbone=vit_l14_336", "backbone.allow_random=true"], 1763266),
        (["model=adaptclip", "backbone=vit_l14_336", "adapter=visual_textual"], 609024),
        (["model=clip", "backbone=vit_b16"], 0),
    ],
)
def test_summary_last_line_is_the_papers_count(overrides, count, capsys):
    summary_main(overrides)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"trainable parameters: {count}"


def evaluate_converted(checkpoint, tmp_path, data_dir, *extra):
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}", "data=synthetic", "data.test=[synthetic_medical]",
                                  "logger=csv", "~callbacks.progress", "callbacks.heatmaps.per_class=0",
                                  f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path / 'eval'}", *extra])
    return evaluate(cfg, overrides=[])


def test_adaclip_reference_checkpoint_converts_and_evaluates(tmp_path, synthetic_data_dir):
    reference = reference_checkpoint(width=64, text_width=64, embed=64)
    source, target = tmp_path / "adaclip_reference.pth", tmp_path / "adaclip.ckpt"
    torch.save(reference, source)
    convert("adaclip", source, target, ["backbone=tiny"])
    saved = torch.load(target, weights_only=True)
    assert saved["hyper_parameters"]["cfg"]["model"]["name"] == "adaclip"
    assert torch.equal(saved["state_dict"]["cls_projection.linear.weight"],
                       reference["clip_model.cls_token_layer.head.0.weight"])
    assert evaluate_converted(target, tmp_path, synthetic_data_dir) is not None
    assert (tmp_path / "eval" / "results.csv").is_file()


def test_adaptclip_reference_checkpoint_converts_and_evaluates_few_shot(tmp_path, synthetic_data_dir):
    source, target = tmp_path / "adaptclip_reference.pth", tmp_path / "adaptclip.ckpt"
    torch.save(reference_layout(randomised_adapters(64)), source)
    convert("adaptclip", source, target, ["backbone=tiny"])
    assert evaluate_converted(target, tmp_path, synthetic_data_dir, "shots=[0,1]", "few_shot_seeds=[10,20]") is not None
    out = tmp_path / "eval"
    assert sorted(p.name for p in out.glob("results_shots*_seed*.csv")) == [
        "results_shots0_seed10.csv", "results_shots1_seed10.csv", "results_shots1_seed20.csv"]
    summary = (out / "results_shots.md").read_text()
    assert "| 0 | 1 |" in summary and "| 1 | 2 |" in summary and "±" in summary
    assert sorted(p.name for p in out.glob("few_shot_prompts_*.json")) == [
        "few_shot_prompts_shots1_seed10.json", "few_shot_prompts_shots1_seed20.json"]


def test_convert_refuses_a_foreign_file(tmp_path, capsys):
    source = tmp_path / "foreign.pth"
    torch.save({"model": {"weight": torch.zeros(2)}}, source)
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["adaptclip", str(source), str(tmp_path / "out.ckpt")])
    assert exit_info.value.code == 2
    assert "textual_learner" in capsys.readouterr().err
