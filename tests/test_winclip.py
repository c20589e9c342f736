"""WinCLIP / WinCLIP+: window pass, prompt ensemble, harmonic spreading, few-shot memory, end to end."""
from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from clipad.cli.hydra_setup import compose_config
from clipad.cli.summary import summary_lines
from clipad.cli.train import train
from clipad.data.batch import Batch
from clipad.errors import ConfigError
from clipad.models.prompt_states import NORMAL_STATES
from clipad.models.registry import build_module, build_module_structure
from clipad.models.winclip.features import WindowEncoder
from clipad.models.winclip.scoring import NormalMemory, few_shot_map, nearest_normal_distance, text_anomaly_score
from clipad.models.winclip.text import ANOMALOUS_STATES, TEMPLATES, state_sentences, state_text_embeddings
from clipad.models.winclip.windows import harmonic_spread, window_indices

SIZE = 112  # tiny backbone at 112 px: a 7 x 7 patch grid


def tiny_module(*extra: str):
    cfg = compose_config("train", ["model=winclip", "backbone=tiny", f"backbone.image_size={SIZE}", "data=mvtec",
                                   "callbacks=none", "logger=none", "paths.output_dir=.", *extra])
    return build_module(cfg).eval()


@pytest.fixture(scope="module")
def module():
    return tiny_module()


def batch_of(images: torch.Tensor, name: str = "bottle") -> Batch:
    count = images.shape[0]
    return Batch(image=images, mask=images.new_zeros(count, 1, *images.shape[-2:]),
                 has_mask=torch.zeros(count, dtype=torch.bool), label=torch.zeros(count, dtype=torch.long),
                 cls_name=[name] * count, prompt_name=[name] * count, dataset=["test"] * count, path=[""] * count)


class FixedReferences:
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        return self.images


# ---------------------------------------------------------------- counts and shapes of the paper's backbone
def test_summary_on_vit_b16_plus_240_has_no_trainable_parameters():
    cfg = compose_config("train", ["model=winclip", "backbone=vit_b16_plus_240", "data=mvtec"])
    structure = build_module_structure(cfg)
    lines = summary_lines(structure)
    assert lines[-1] == "trainable parameters: 0"
    assert sum(p.numel() for p in structure.parameters()) == 208_377_345  # the sheet's open_clip count
    assert structure.backbone.grid == (15, 15)
    assert tuple(window_indices((15, 15), 2).shape) == (196, 4)
    assert tuple(window_indices((15, 15), 3).shape) == (169, 9)


def test_model_winclip_selects_its_backbone_unless_one_is_given():
    assert compose_config("train", ["model=winclip", "data=mvtec"]).backbone.name == "ViT-B-16-plus-240"
    assert compose_config("train", ["model=winclip", "data=mvtec", "backbone=tiny"]).backbone.name == "clipad-tiny"


def test_window_indices_are_the_row_major_patches_of_each_window():
    indices = window_indices((3, 4), 2)
    assert indices.tolist() == [[0, 1, 4, 5], [1, 2, 5, 6], [2, 3, 6, 7], [4, 5, 8, 9], [5, 6, 9, 10], [6, 7, 10, 11]]
    with pytest.raises(ValueError, match="does not fit"):
        window_indices((3, 4), 4)


# ---------------------------------------------------------------- window pass
def test_batched_window_pass_equals_each_window_alone(module):
    backbone = module.backbone
    visual = backbone.clip.visual
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    # A small max_sequences splits the stack of windows into several uneven chunks.
    encoder = WindowEncoder(backbone, (2, 3), max_sequences=7)
    features = encoder(images)
    with torch.no_grad():
        patches = visual.conv1(images).flatten(2).transpose(1, 2)  # [B, N, width]
        position = visual.positional_embedding
        cls = visual.class_embedding + position[0]
        for scale, indices in encoder.indices.items():
            assert features.windows[scale].shape == (2, indices.shape[0], backbone.embed_dim)
            for b in range(2):
                for w, window in enumerate(indices):
                    # Built from scratch and run through open_clip's own (batch-first) Transformer, one window.
                    tokens = torch.cat([cls[None], patches[b, window] + position[1 + window]])[None]
                    alone = visual.ln_post(visual.transformer(visual.ln_pre(tokens))[:, 0]) @ visual.proj
                    # Not ==: a batch of 1 and a stacked chunk run different kernels (and the fused attention
                    # fast path), which round differently; 1e-5 is far below any mixing of windows.
                    torch.testing.assert_close(features.windows[scale][b, w], alone[0], atol=1e-5, rtol=1e-5)
        whole = visual.transformer(visual.ln_pre(torch.cat([cls.expand(2, 1, -1), patches + position[1:]], 1)))
        torch.testing.assert_close(features.image, visual.ln_post(whole[:, 0]) @ visual.proj, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(features.patches, visual.ln_post(whole[:, 1:]), atol=1e-5, rtol=1e-5)


def test_a_window_does_not_see_patches_outside_it(module):
    encoder = WindowEncoder(module.backbone, (2,), max_sequences=4096)
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    changed = images.clone()
    changed[..., -16:, -16:] += 3.0  # the bottom-right patch only
    before, after = encoder(images).windows[2][0], encoder(changed).windows[2][0]
    covers = (encoder.indices[2] == 48).any(dim=1)  # patch 48 of the 7 x 7 grid: only the last window has it
    assert covers.sum() == 1
    # The same windows in the same batch layout: bit-identical unless a window sees the changed patch.
    assert torch.equal(before[~covers], after[~covers])
    assert not torch.allclose(before[covers], after[covers])


# ---------------------------------------------------------------- text
def test_prompt_ensemble_is_the_unnormalised_mean_of_147_and_84_sentences(module):
    assert len(TEMPLATES) == 21 and len(set(TEMPLATES)) == 20  # anomalib's list, its duplicate kept
    normal, anomalous = state_sentences(NORMAL_STATES, "metal_nut"), state_sentences(ANOMALOUS_STATES, "metal_nut")
    assert (len(normal), len(anomalous)) == (147, 84)
    assert "a photo of the metal_nut for visual inspection." in normal
    assert "a photo of a metal_nut with defect." in anomalous
    text = state_text_embeddings(module.backbone, "metal_nut")
    sentences = module.backbone.text_embeddings(normal)
    torch.testing.assert_close(text[0], sentences.mean(0))
    assert not torch.allclose(F.normalize(text[0], dim=0), F.normalize(F.normalize(sentences, dim=-1).mean(0), dim=0))


def test_text_anomaly_score_is_the_anomalous_softmax_at_temperature():
    text = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]]).transpose(0, 1)  # [1, 2, 2]: normal e1, anomalous 2*e2
    embeddings = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    expected = torch.tensor([[1 / (1 + torch.e ** (1 / 0.07)), 1 / (1 + torch.e ** (-1 / 0.07)), 0.5]])
    torch.testing.assert_close(text_anomaly_score(embeddings, text, 0.07), expected)


# ---------------------------------------------------------------- harmonic spreading
def test_harmonic_spread_against_a_hand_computation():
    # 3 x 3 grid, 2 x 2 windows: 4 windows, top-left (a), top-right (b), bottom-left (c), bottom-right (d).
    a, b, c, d = 0.2, 0.4, 0.5, 0.8
    indices = window_indices((3, 3), 2)
    spread = harmonic_spread(torch.tensor([[a, b, c, d]]), indices, 9)[0]

    def hm(*values):
        return len(values) / sum(1 / v for v in values)

    expected = [a, hm(a, b), b,
                hm(a, c), hm(a, b, c, d), hm(b, d),
                c, hm(c, d), d]
    torch.testing.assert_close(spread, torch.tensor(expected))
    # A zero window score is the harmonic mean's limit: 0 on every patch it covers, nowhere else.
    zero = harmonic_spread(torch.tensor([[0.0, b, c, d]]), indices, 9)[0]
    assert zero[[0, 1, 3, 4]].eq(0).all() and zero[[2, 5, 6, 7, 8]].gt(0).all()


# ---------------------------------------------------------------- few-shot association
def test_nearest_normal_distance_pools_all_shots_and_positions():
    memory = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1)  # e.g. two shots' entries
    queries = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]])
    expected = torch.tensor([[0.0, 0.5, (1 - (-(2 ** -0.5))) / 2, (1 - 2 ** -0.5) / 2]])
    torch.testing.assert_close(nearest_normal_distance(queries, memory), expected)


def test_a_reference_image_as_query_has_a_zero_few_shot_map(module):
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    features = module.encoder(images)
    memory = NormalMemory.from_features(module.encoder(images[:1]))
    maps = few_shot_map(features, memory, module.encoder.indices)
    assert maps.shape == (2, 49)
    assert maps[0].abs().max() < 1e-6  # every patch and window of image 0 is in the memory
    assert maps[1].min() > 0


def test_forward_fuses_zero_and_few_shot_as_the_sheet(module):
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    references = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    batch = batch_of(images)
    module.shots = 0
    zero = module(batch)
    assert zero.anomaly_map.shape == (2, SIZE, SIZE) and torch.equal(zero.anomaly_map, zero.raw_map)  # no smoothing
    module.shots, module.prompt_source = 2, FixedReferences(references)
    try:
        few = module(batch)
    finally:
        module.shots, module.prompt_source = 0, None
    features = module.encoder(images)
    visual = few_shot_map(features, NormalMemory.from_features(module.encoder(references)), module.encoder.indices)
    torch.testing.assert_close(few.score, (zero.score + visual.amax(1)) / 2)
    upsampled = F.interpolate(visual.reshape(2, 1, 7, 7), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(few.anomaly_map, (zero.anomaly_map + upsampled[:, 0]) / 2)
    assert module.state_dict() == {}  # nothing to store: text and memory are caches


# ---------------------------------------------------------------- end to end
def test_train_only_tests_at_shots_0_and_1_on_synthetic_data(tmp_path, synthetic_data_dir):
    cfg = compose_config("train", [
        "model=winclip", "backbone=tiny", f"backbone.image_size={SIZE}", "data=synthetic_medical",
        "data.classes=[retina,phantom]", "shots=[0,1]", "logger=none", "callbacks=none", "data.num_workers=0",
        f"paths.data_dir={synthetic_data_dir}", f"paths.output_dir={tmp_path}"])
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0
    # training-free: nothing fitted; the checkpoint holds the config only (for evaluate/predict/app)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] == {}
    means = {}
    for shots in (0, 1):
        with open(tmp_path / f"results_shots{shots}_seed10.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["level"] == "class"]
        assert sorted(r["class"] for r in rows) == ["phantom", "retina"]
        assert all(0.0 <= float(r["pixel_auroc"]) <= 1.0 and 0.0 <= float(r["image_auroc"]) <= 1.0 for r in rows)
        means[shots] = [r["pixel_auroc"] for r in rows]
    assert means[0] != means[1]  # the memory changes the maps
    assert (tmp_path / "few_shot_prompts_shots1_seed10.json").is_file()


def test_window_settings_that_cannot_work_are_config_errors():
    with pytest.raises(ConfigError, match=r"model.scales=\[2, 8\] .* 7x7 patch grid"):
        tiny_module("model.scales=[2,8]")
    with pytest.raises(ConfigError, match="model.window_batch=0"):
        tiny_module("model.window_batch=0")


class ReferencesByClass:
    def __init__(self, images: dict[str, torch.Tensor]) -> None:
        self.images = images

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        return self.images[cls_name]


def test_a_mixed_batch_matches_each_class_against_its_own_memory(module):
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    generator = torch.Generator().manual_seed(7)
    references = {name: torch.randn(1, 3, SIZE, SIZE, generator=generator) for name in ("bottle", "screw")}
    names = ["bottle", "screw", "bottle"]
    mixed = batch_of(images)
    mixed.cls_name, mixed.prompt_name = names, names
    module.shots, module.prompt_source = 1, ReferencesByClass(references)
    try:
        together = module(mixed)
        alone = [module(batch_of(images[i : i + 1], names[i])) for i in range(3)]
    finally:
        module.shots, module.prompt_source = 0, None
    # Not ==: one image and three images per pass run different kernels, which round differently.
    torch.testing.assert_close(together.score, torch.cat([o.score for o in alone]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.anomaly_map, torch.cat([o.anomaly_map for o in alone]), atol=1e-5, rtol=1e-5)
