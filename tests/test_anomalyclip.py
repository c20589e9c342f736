"""AnomalyCLIP: parameter count, prompt placement, map and score formulas, loss, training end to end."""
from __future__ import annotations

import csv

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipad.cli import summary as summary_cli
from clipad.cli.hydra_setup import compose_config
from clipad.cli.train import train
from clipad.data.batch import Batch
from clipad.data.datamodule import AnomalyDataModule
from clipad.models.adaptclip.scoring import BranchOutput
from clipad.models.anomalyclip.convert import reference_layout
from clipad.models.anomalyclip.loss import anomalyclip_loss
from clipad.models.anomalyclip.prompts import PromptWriter
from clipad.models.registry import build_module, build_module_structure
from clipad.models.smoothing import gaussian_smooth


def tiny_module(*overrides: str):
    cfg = compose_config("train", ["model=anomalyclip", "backbone=tiny", "backbone.image_size=112", *overrides])
    torch.manual_seed(0)
    return build_module(cfg).eval()


def image_batch(images: torch.Tensor) -> Batch:
    n = images.shape[0]
    return Batch(image=images, mask=images.new_zeros(n, 1, *images.shape[-2:]), has_mask=torch.ones(n, dtype=torch.bool),
                 label=torch.zeros(n, dtype=torch.long), cls_name=["x"] * n, prompt_name=["x"] * n,
                 dataset=["d"] * n, path=[""] * n)


def test_vit_l14_336_count_structure_and_reference_checkpoint_layout(capsys, monkeypatch):
    built = []
    monkeypatch.setattr(summary_cli, "build_module_structure", lambda cfg: built.append(build_module_structure(cfg))
                        or built[-1])  # keep the module the command builds (ViT-L on meta) to inspect it
    summary_cli.main(["model=anomalyclip", "backbone=vit_l14_336", "backbone.allow_random=true"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "trainable parameters: 43008"
    module = built[0]
    assert module.trainable_parts() == {"context tokens": 18432, "deep text prompts": 24576}
    backbone = module.backbone
    assert backbone.feature_layers == [24] and backbone.vv_blocks == 19  # v-v in 0-based blocks 5..23
    assert isinstance(backbone.clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert isinstance(backbone.clip.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    # The key list of the released checkpoints (the sheet), less the dead projections the importer drops.
    expected = {"ctx_pos": (1, 1, 12, 768), "ctx_neg": (1, 1, 12, 768)}
    for name in ("pos", "neg"):
        expected |= {f"token_prefix_{name}": (1, 1, 1, 768), f"token_suffix_{name}": (1, 1, 64, 768),
                     f"tokenized_prompts_{name}": (1, 1, 77)}
    expected |= {f"compound_prompts_text.{i}": (4, 768) for i in range(8)}
    assert reference_layout(module) == expected


def test_sentences_end_where_the_sheet_says_and_prompts_land_in_their_slots():
    module = tiny_module("model.context_tokens=6", "model.deep_prompt_length=2")
    # SOT + 6 X + ("damaged") "object" "." + EOT
    assert module.sentence_token_ids.argmax(dim=-1).tolist() == [9, 10]
    assert len(module.prompts.deep) == 3  # depth 9 capped at the tiny text tower's 4 blocks: blocks 1..3
    writer = PromptWriter(module.prompts, module.backbone.clip.positional_embedding)
    x = torch.randn(2, 11, module.backbone.text_width)
    first = writer(0, x)
    context = torch.stack([module.prompts.ctx_normal, module.prompts.ctx_anomalous])
    assert torch.equal(first[:, 1:7], context + module.backbone.clip.positional_embedding[1:7])
    assert torch.equal(first[:, :1], x[:, :1]) and torch.equal(first[:, 7:], x[:, 7:])
    for index in (1, 2, 3):
        out = writer(index, x)
        assert torch.equal(out[:, 1:3], module.prompts.deep[index - 1].expand(2, -1, -1))  # shared by both
        assert torch.equal(out[:, :1], x[:, :1]) and torch.equal(out[:, 3:], x[:, 3:])
    assert torch.equal(writer(4, x), x)


def test_fp16_rounding_of_deep_prompts_equals_rounding_them_by_hand():
    plain, rounded = tiny_module(), tiny_module("model.round_deep_prompts_fp16=true")
    with torch.no_grad():
        for deep in plain.prompts.deep:
            deep.copy_(deep + 1e-4 * torch.randn_like(deep))  # values fp16 cannot hold
        rounded.load_state_dict(plain.state_dict())
        reference_text = plain.text_features()
        assert not torch.equal(rounded.text_features(), reference_text)
        for deep in plain.prompts.deep:
            deep.copy_(deep.half().float())
        plain.clear_text_cache()
        assert torch.equal(rounded.text_features(), plain.text_features())


def test_map_is_p_abnormal_summed_over_layers_and_score_the_global_feature_alone():
    module = tiny_module("backbone.feature_layers=[2,4]")
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = module(image_batch(images))
        backbone = module.backbone
        encoded = backbone.encode_image(images, value_value=True)
        text = module.text_features()
        maps = []
        for tokens in encoded.layer_tokens:
            patches = F.normalize(backbone.project(tokens)[:, 1:], dim=-1)
            probs = (patches @ text.t() / 0.07).softmax(dim=-1)[..., 1].reshape(2, 1, *backbone.grid)
            maps.append(F.interpolate(probs, size=(112, 112), mode="bilinear", align_corners=False)[:, 0])
        global_feature = F.normalize(encoded.last_tokens[:, 0] @ backbone.clip.visual.proj, dim=-1)  # no ln_post
        score = (global_feature @ text.t() / 0.07).softmax(dim=-1)[:, 1]
    assert module.map_upper_bound == 2.0
    # Same operations in the same order on the same inputs, except a different reduction order of the sum: 1e-6.
    torch.testing.assert_close(output.raw_map, maps[0] + maps[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(output.anomaly_map, gaussian_smooth(maps[0] + maps[1], 4.0 * 112 / 518),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(output.score, score, atol=1e-6, rtol=0)


def test_loss_weights_segmentation_by_lambda_and_skips_pixels_without_masks():
    probs = torch.rand(2, 1, 8, 8)
    output = BranchOutput(probs=torch.cat([1 - probs, probs], dim=1), logits=torch.randn(2, 2))
    label, mask = torch.tensor([1, 0]), (torch.rand(2, 8, 8) > 0.5).float()
    seg1, image = anomalyclip_loss([output], label, mask, torch.tensor([True, True]), 1.0)
    seg4, _ = anomalyclip_loss([output, output], label, mask, torch.tensor([True, True]), 4.0)
    torch.testing.assert_close(seg4, 8 * seg1)
    torch.testing.assert_close(image, F.cross_entropy(output.logits, label))
    none, _ = anomalyclip_loss([output], label, mask, torch.tensor([False, False]), 4.0)
    assert float(none) == 0.0


def test_trains_on_synthetic_data_and_checkpoints_only_the_prompts(tmp_path, synthetic_data_dir):
    cfg = compose_config("train", [
        "model=anomalyclip", "backbone=tiny", "backbone.image_size=112", "data=synthetic",
        "data.test=[synthetic_medical]", "data.num_workers=0", "model.max_epochs=1", "logger=csv",
        "~callbacks.progress", "callbacks.heatmaps.per_class=0", "+trainer.limit_train_batches=3",
        f"paths.data_dir={synthetic_data_dir}", f"paths.output_dir={tmp_path}"])
    before = build_module(cfg).state_dict()
    assert train(cfg) is not None
    with open(tmp_path / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["level"] == "class"]
    assert sorted(r["class"] for r in rows) == ["histology", "phantom", "retina"]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert sorted(saved) == sorted(before) == ["prompts.ctx_anomalous", "prompts.ctx_normal", "prompts.deep.0",
                                               "prompts.deep.1", "prompts.deep.2"]
    assert any(not torch.equal(saved[k], before[k]) for k in saved)  # the prompts learnt


@pytest.mark.parametrize("key, value", [("model.context_tokens", 0), ("model.deep_prompt_length", 13)])
def test_bad_prompt_shapes_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        tiny_module(f"{key}={value}")


@pytest.mark.parametrize("target, trains_on, tests", [("visa", ["mvtec"], 13), ("mvtec", ["visa"], 1)])
def test_paper_experiment_is_the_reference_recipe(target, trains_on, tests, tmp_path):
    cfg = compose_config("train", ["experiment=anomalyclip_paper", f"data={target}", f"paths.data_dir={tmp_path}"])
    model = cfg.model
    assert (model.name, model.max_epochs, model.batch_size, model.seed, cfg.backbone.image_size) == (
        "anomalyclip", 15, 8, 111, 518)
    assert (model.optimizer.lr, list(model.optimizer.betas), model.temperature) == (0.001, [0.5, 0.999], 0.07)
    assert (model.quick_gelu, model.pos_embed_interp, model.round_deep_prompts_fp16) == (True, "bilinear", False)
    datamodule = AnomalyDataModule.from_config(cfg)
    assert [s.name for s in datamodule._train] == trains_on and datamodule.train_split == "test"
    assert len(datamodule._targets) == tests and datamodule._val is None  # no validation: epoch 15 is kept


def test_text_features_equal_a_literal_pass_over_all_77_positions():
    """The reference's text pass written out: embeddings with the context spliced in, + positional embedding,
    full 77-token causal pass with deep prompts overwriting positions 1..4 before blocks 1..3, EOT pooling."""
    module = tiny_module("model.deep_prompt_length=4")
    clip, prompts = module.backbone.clip, module.prompts
    ids = module.sentence_token_ids
    with torch.no_grad():
        embedded = clip.token_embedding(ids)
        context = torch.stack([prompts.ctx_normal, prompts.ctx_anomalous])
        x = torch.cat([embedded[:, :1], context, embedded[:, 13:]], dim=1) + clip.positional_embedding
        for index, block in enumerate(clip.transformer.resblocks):
            if 1 <= index <= len(prompts.deep):
                x = torch.cat([x[:, :1], prompts.deep[index - 1].expand(2, -1, -1), x[:, 5:]], dim=1)
            x = block(x, attn_mask=clip.attn_mask)
        pooled = clip.ln_final(x)[torch.arange(2), ids.argmax(dim=-1)] @ clip.text_projection
        expected = F.normalize(pooled, dim=-1)
        # The backbone stops after the longest sentence's EOT (the causal mask hides later positions), so the
        # attention runs over 17 instead of 77 keys: same values, other summation lengths, hence 1e-6.
        torch.testing.assert_close(module.text_features(), expected, atol=1e-6, rtol=0)
