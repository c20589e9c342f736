"""AdaptCLIP module: parameter counts, branches, zero-/few-shot fusion, training, checkpoints."""

from __future__ import annotations

import zlib
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from open_clip.transformer import QuickGELU
from torch.utils.data import DataLoader

from clipad.data.batch import Batch
from clipad.models.adaptclip import AdaptCLIPModule, PromptQueryAdapter, TextualAdapter
from clipad.models.adaptclip.fusion import few_shot_fusion, harmonic_mean, zero_shot_fusion
from clipad.models.adaptclip.prompt_query import Alignment, align_layers, alignment_map
from clipad.models.adaptclip.text import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, state_sentences
from clipad.models.base import AnomalyModule

# training_step is also driven without a Trainer here, where Lightning warns that self.log is a no-op.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE = 112  # tiny backbone at 112 px (7 x 7 patches) keeps the file fast; ViT-B-16 runs at 224


def compose_cfg(out_dir: Path, *overrides: str):
    if not any(o.startswith("backbone=") for o in overrides):
        overrides = ("backbone=tiny", f"backbone.image_size={SIZE}", *overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "model=adaptclip",
                "data=mvtec",
                f"paths.output_dir={out_dir}",
                *overrides,
            ],
        )


def build(out_dir: Path, *overrides: str, device: str = "cpu", seed: int = 0) -> AdaptCLIPModule:
    torch.manual_seed(seed)
    return AdaptCLIPModule(compose_cfg(out_dir, *overrides), device=device)


class StubPrompts:
    """Stands in for the datamodule: k seeded random normal images per class; records the calls."""

    def __init__(self, k: int, fixed: torch.Tensor | None = None, size: int = SIZE) -> None:
        self.k = k
        self.fixed = fixed
        self.size = size
        self.calls: list[tuple[str, str]] = []

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        self.calls.append((dataset, cls_name))
        if self.fixed is not None:
            return self.fixed
        generator = torch.Generator().manual_seed(zlib.crc32(f"{dataset}/{cls_name}".encode()))
        return torch.randn(self.k, 3, self.size, self.size, generator=generator)


def make_batch(
    classes: tuple[str, ...] = ("bottle", "cable", "bottle"), seed: int = 1, size: int = SIZE
) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = len(classes)
    mask = torch.zeros(n, 1, size, size)
    mask[1:, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1.0
    return Batch(
        image=torch.randn(n, 3, size, size, generator=g),
        mask=mask,
        has_mask=torch.ones(n, dtype=torch.bool),
        label=(mask.flatten(1).amax(1) > 0).long(),
        cls_name=list(classes),
        prompt_name=list(classes),
        dataset=["mvtec"] * n,
        path=[f"/data/{c}/{i}.png" for i, c in enumerate(classes)],
        normal_image=torch.randn(n, 3, size, size, generator=g),
    )


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adaptclip")


@pytest.fixture(scope="module")
def tiny(out_dir) -> AdaptCLIPModule:
    return build(out_dir).eval()


# ------------------------------------------------------------------ configuration and counts
def test_config_defaults_are_the_reference_recipe(out_dir):
    cfg = compose_cfg(out_dir)
    model = cfg.model
    assert (model.quick_gelu, model.pos_embed_interp, model.value_value) == (True, "bilinear", True)
    assert (model.seed, model.max_epochs, model.batch_size, model.temperature) == (10, 15, 8, 0.07)
    assert (model.optimizer.lr, list(model.optimizer.betas)) == (0.001, [0.5, 0.999])
    assert model.pair_normal and model.pq_context and list(model.few_shot_seeds) == [10, 20, 30]
    assert model.clamp_align_distance is False  # the reference uses 1 - cos as is
    assert list(model.aux_data.default.train) == ["mvtec"] and list(model.aux_data.by_target.mvtec.train) == [
        "visa"
    ]
    assert dict(cfg.adapter) == {"visual": True, "textual": True, "prompt_query": True}
    groups = {
        "visual": (True, False, False),
        "textual": (False, True, False),
        "visual_textual": (True, True, False),
        "pq": (False, False, True),
    }
    for name, flags in groups.items():
        adapter = compose_cfg(out_dir, f"adapter={name}").adapter
        assert (adapter.visual, adapter.textual, adapter.prompt_query) == flags


@pytest.mark.parametrize(
    "adapter, parts, total",
    [
        (
            "all",
            {"visual adapter": 590_592, "textual adapter": 18_432, "prompt-query adapter": 1_154_242},
            1_763_266,
        ),
        ("visual_textual", {"visual adapter": 590_592, "textual adapter": 18_432}, 609_024),
    ],
)
def test_trainable_parameters_on_vit_l14_336(out_dir, adapter, parts, total):
    module = build(
        out_dir,
        "backbone=vit_l14_336",
        "backbone.pretrained=null",
        "backbone.allow_random=true",
        f"adapter={adapter}",
        device="meta",
    )
    assert module.trainable_parts() == parts
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == total
    clip = module.backbone.clip
    assert module.backbone.vv_blocks == 19 and module.backbone.grid == (37, 37)
    assert isinstance(clip.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(clip.transformer.resblocks[0].mlp.gelu, QuickGELU)
    # BatchNorm statistics are checkpointed buffers, not parameters; the frozen CLIP is not checkpointed.
    keys = module.state_dict().keys()
    assert "adapters.visual.local_adapter.fc.1.running_var" in keys
    assert not any(k.startswith("backbone.") for k in keys)


def test_hand_made_prompts_are_7_normal_and_4_anomalous_states_times_21_templates():
    normal, anomalous = state_sentences(NORMAL_STATES), state_sentences(ANOMALOUS_STATES)
    assert (len(normal), len(anomalous), len(TEMPLATES)) == (147, 84, 21)
    assert len(set(TEMPLATES)) == 20  # one template appears twice
    assert all("object" in s for s in normal + anomalous)


def test_adapter_group_errors_are_clear(out_dir):
    with pytest.raises(ValueError, match="at least one"):
        build(out_dir, "adapter.visual=false", "adapter.textual=false", "adapter.prompt_query=false")


# ------------------------------------------------------------------ shapes and paths
@pytest.mark.parametrize("shots", [0, 1, 2, 4])
def test_tiny_outputs_have_contract_shapes_and_ranges(tiny, shots):
    tiny.shots, tiny.prompt_source = shots, StubPrompts(shots)
    tiny.clear_prompt_cache()
    with torch.no_grad():
        out = tiny(make_batch())
    assert out.anomaly_map.shape == (3, SIZE, SIZE) and out.score.shape == (3,)
    for values, bound in ((out.anomaly_map, tiny.map_upper_bound), (out.score, 8 / 7 if shots else 1.0)):
        assert torch.isfinite(values).all() and values.min() >= 0 and values.max() <= bound


def test_tiny_default_config_at_224_px(out_dir):
    module = build(out_dir, "backbone=tiny", "shots=1").eval()  # the tiny config as shipped: 224 px, 14 x 14
    module.prompt_source = StubPrompts(1, size=224)
    with torch.no_grad():
        out = module(make_batch(("bottle", "cable"), size=224))
    assert module.backbone.grid == (14, 14)
    assert out.anomaly_map.shape == (2, 224, 224) and out.score.shape == (2,)


def test_vit_b16_random_backbone_shapes(out_dir):
    module = build(
        out_dir,
        "backbone=vit_b16",
        "backbone.pretrained=null",
        "backbone.allow_random=true",
        "backbone.image_size=224",
    )
    module.eval().shots = 1
    module.prompt_source = StubPrompts(1, size=224)
    batch = make_batch(("bottle",), size=224)
    with torch.no_grad():
        out = module(batch)
        memory = module.prompt_memory("mvtec", "bottle")
    assert out.anomaly_map.shape == (1, 224, 224) and out.score.shape == (1,)
    assert [m.shape for m in memory] == [torch.Size([1, 196, 512])] * 4
    assert module.trainable_parts()["visual adapter"] == 2 * (512 * 128 * 2 + 2 * 128)


def test_zero_shot_asks_for_no_prompts_and_few_shot_encodes_each_class_once(tiny, monkeypatch):
    batch = make_batch()
    stub = StubPrompts(2)
    tiny.prompt_source = stub
    tiny.shots = 0
    with torch.no_grad():
        zero = tiny(batch)
        assert stub.calls == []
        tiny.shots = 2
        tiny.clear_prompt_cache()
        few = tiny(batch)
        tiny(batch)
        assert sorted(stub.calls) == [("mvtec", "bottle"), ("mvtec", "cable")]
        memory = tiny.prompt_memory("mvtec", "bottle")
        assert [m.shape for m in memory] == [torch.Size([1, 2 * 49, 64])] * 4  # all shots pooled
        tiny.few_shot_seed = 20  # another draw is another cache entry
        tiny(batch)
        assert len(stub.calls) == 4
        tiny.few_shot_seed = 10
    assert not torch.allclose(zero.score, few.score)
    # The test loop starts with an empty cache (the base's metric set-up is not under test here).
    monkeypatch.setattr(AnomalyModule, "on_test_epoch_start", lambda self: None)
    tiny.on_test_epoch_start()
    assert tiny._prompt_cache == {}


def test_few_shot_output_is_the_fusion_of_its_branches(tiny):
    batch = make_batch()
    tiny.shots, tiny.prompt_source = 1, StubPrompts(1)
    size = (SIZE, SIZE)
    with torch.no_grad():
        out = tiny(batch)
        query = tiny.features(batch.image)
        branches = tiny._text_branches(query, size)
        alignment, pq_map, pq_score = tiny._few_shot_parts(query, batch, size)
    assert len(branches) == 2 and pq_map is not None
    expected = few_shot_fusion(
        [b.anomaly_map for b in branches] + [pq_map],
        [b.score for b in branches] + [pq_score],
        alignment,
        tiny.smooth,
    )
    assert torch.allclose(out.anomaly_map, expected.anomaly_map) and torch.allclose(out.score, expected.score)


def test_fusion_rules():
    def same(x):
        return x

    a, b, c = (torch.full((1, 2, 2), v) for v in (0.2, 0.6, 0.4))
    scores = [torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([0.5])]
    zero = zero_shot_fusion([a, b], scores[:2], same)
    assert torch.allclose(zero.anomaly_map, torch.full((1, 2, 2), 0.4))
    assert torch.allclose(zero.score, torch.tensor([(0.1 + 0.3 + 0.4) / 3]))
    few = few_shot_fusion([a, b, c], scores, torch.full((1, 2, 2), 0.8), same)
    fused = 2 * 0.4 * 0.8 / (0.4 + 0.8)
    assert torch.allclose(few.anomaly_map, torch.full((1, 2, 2), fused))
    assert torch.allclose(few.score, torch.tensor([2 * 0.3 * fused / (0.3 + fused)]))
    assert harmonic_mean(torch.tensor([[0.0], [0.5]])).item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="shots >= 1"):
        zero_shot_fusion([], [], same)


def test_query_identical_to_a_prompt_has_zero_alignment_map(tiny):
    image = torch.randn(1, 3, SIZE, SIZE)
    other = torch.randn(1, 3, SIZE, SIZE)
    tiny.shots = 2
    tiny.prompt_source = StubPrompts(2, fixed=torch.cat([other, image]))  # the 2nd shot is the query
    tiny.clear_prompt_cache()
    with torch.no_grad():
        memory = tiny.prompt_memory("mvtec", "bottle")
        same = alignment_map(
            align_layers(tiny.features(image).unit_patches(), memory), tiny.backbone.grid, (SIZE, SIZE)
        )
        fresh = torch.randn(1, 3, SIZE, SIZE)
        differs = alignment_map(
            align_layers(tiny.features(fresh).unit_patches(), memory), tiny.backbone.grid, (SIZE, SIZE)
        )
    assert same.shape == (1, SIZE, SIZE) and same.abs().max() < 1e-5
    assert differs.max() > 1e-2


def test_new_prompt_source_replaces_the_cached_prompt_features(tiny):
    batch = make_batch()
    tiny.shots = 1
    tiny.prompt_source = StubPrompts(1, fixed=torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        first = tiny(batch)
        tiny.prompt_source = StubPrompts(1, fixed=torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6)))
        second = tiny(batch)  # no clear_prompt_cache(): assigning the source is enough
    assert not torch.allclose(first.score, second.score)
    assert not torch.allclose(first.anomaly_map, second.anomaly_map)


def test_align_distance_is_the_references_1_minus_cos_unless_clamped():
    # One 1 x 1 patch grid, one layer: the query's nearest (and only) prompt patch is at cos = -0.6.
    query = torch.tensor([[[1.0, 0.0]]])
    memory = torch.tensor([[[-0.6, 0.8]]])
    aligned = align_layers([query], [memory])
    assert torch.allclose(aligned.distance[0], torch.tensor([[1.6]]))
    assert torch.allclose(alignment_map(aligned, (1, 1), (2, 2)), torch.full((1, 2, 2), 1.6))
    assert torch.allclose(alignment_map(aligned, (1, 1), (2, 2), clamp=True), torch.ones(1, 2, 2))


def test_unclamped_few_shot_maps_reach_past_1_and_the_metrics_see_them_scaled(out_dir):
    def same(x):
        return x

    # A branch map of 1 and an alignment distance of 2 (cos = -1): the reference's fused map is 4/3.
    few = few_shot_fusion([torch.ones(1, 2, 2)], [torch.ones(1)], torch.full((1, 2, 2), 2.0), same)
    assert torch.allclose(few.anomaly_map, torch.full((1, 2, 2), 4 / 3))
    assert torch.allclose(few.score, torch.tensor([8 / 7]))
    faithful, clamped = build(out_dir, "shots=1"), build(out_dir, "shots=1", "model.clamp_align_distance=true")
    assert faithful.map_upper_bound == pytest.approx(4 / 3) and clamped.map_upper_bound == 1.0
    assert build(out_dir).map_upper_bound == 1.0  # zero-shot maps stay in [0, 1]


@pytest.mark.parametrize("shots", [0, 2])
def test_batch_equivalence(tiny, shots):
    batch = make_batch()
    tiny.shots, tiny.prompt_source = shots, StubPrompts(shots)
    with torch.no_grad():
        whole = tiny(batch)
        for i in range(len(batch)):
            single = batch.subset(slice(i, i + 1))
            out = tiny(single)
            # other batch shapes sum in another order on CPU: float32 last bits, far below 1e-5
            assert torch.allclose(out.anomaly_map[0], whole.anomaly_map[i], atol=1e-5)
            assert torch.allclose(out.score[0], whole.score[i], atol=1e-5)


# ------------------------------------------------------------------ adapters
def test_textual_context_takes_the_place_of_the_placeholder_embeddings(tiny):
    adapter = TextualAdapter(tiny.backbone.text_width, 12)
    backbone = tiny.backbone
    placeholder = backbone.clip.token_embedding.weight[backbone.tokenize(["X"])[0, 1]]
    with torch.no_grad():
        adapter.ctx_normal.copy_(placeholder.expand(12, -1))
        adapter.ctx_anomalous.copy_(torch.randn(12, backbone.text_width))
        text = adapter(backbone)
        plain = F.normalize(backbone.text_embeddings([adapter.template]), dim=-1)
    assert adapter.template == "X X X X X X X X X X X X ."
    assert torch.allclose(text[0], plain[0], atol=1e-5) and not torch.allclose(text[1], plain[0], atol=1e-2)


def test_alignment_picks_the_nearest_patch_of_the_pooled_memory():
    query = F.normalize(torch.randn(2, 49, 64), dim=-1)
    memory = F.normalize(torch.randn(1, 3 * 49, 64), dim=-1)  # 3 shots pooled, shared by the batch
    aligned = align_layers([query], [memory])
    cos = query @ memory[0].t()
    assert torch.equal(aligned.nearest[0], memory[0][cos.argmax(dim=-1)])
    assert torch.allclose(aligned.distance[0], 1 - cos.amax(dim=-1))


@pytest.mark.parametrize("context", [True, False])
def test_prompt_query_fuses_query_and_aligned_residual(context):
    torch.manual_seed(0)
    adapter = PromptQueryAdapter(64, num_layers=1, context=context).eval()
    q, p = (F.normalize(torch.randn(2, 49, 64), dim=-1) for _ in range(2))
    distance = [torch.zeros(2, 49)]
    with torch.no_grad():
        out = adapter([q], Alignment(nearest=[p], distance=distance), (7, 7), (28, 28))[0]
        # |q - p| is symmetric: only the context term (q + ...) tells the query from its aligned prompt.
        swapped = adapter([p], Alignment(nearest=[q], distance=distance), (7, 7), (28, 28))[0]
    assert out.probs.shape == (2, 2, 28, 28) and out.logits.shape == (2, 2)
    assert torch.allclose(out.probs.sum(dim=1), torch.ones(2, 28, 28))
    same = torch.allclose(out.probs, swapped.probs) and torch.allclose(out.logits, swapped.logits)
    assert same != context


def test_visual_and_textual_branches_share_no_gradient(out_dir):
    module = build(out_dir).train()
    size = (SIZE, SIZE)
    query = module.features(make_batch().image)
    visual, textual = module.adapters.visual, module.adapters.textual
    out = module._visual_branch(query, size)
    (out.probs[:, 1].mean() + out.logits.sum()).backward()
    assert all(p.grad is not None for p in visual.parameters())
    assert all(p.grad is None for p in textual.parameters())
    module.zero_grad(set_to_none=True)
    out = module._textual_branch(query, size)
    (out.probs[:, 1].mean() + out.logits.sum()).backward()
    assert all(p.grad is not None for p in textual.parameters())
    assert all(p.grad is None for p in visual.parameters())


def test_batchnorm_uses_running_statistics_in_eval_and_updates_them_in_training(out_dir):
    module = build(out_dir, "shots=1")
    module.prompt_source = StubPrompts(1)
    g = torch.Generator().manual_seed(3)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=g))
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=g) + 0.5)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.eval()
    with torch.no_grad():
        module(make_batch())
        adapter = module.adapters.visual.global_adapter
        x = torch.randn(5, 64)
        linear1, bn, _, linear2 = adapter.fc
        hidden = (linear1(x) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        assert torch.allclose(adapter(x), x + linear2(hidden.relu()), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    module.train()
    assert not module.backbone.training
    module.training_step(make_batch(), 0)
    after = module.state_dict()
    assert not torch.equal(
        before["adapters.visual.local_adapter.fc.1.running_mean"],
        after["adapters.visual.local_adapter.fc.1.running_mean"],
    )
    assert int(after["adapters.prompt_query.layer_bn.0.num_batches_tracked"]) == 1


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("adapter", ["all", "visual", "textual", "visual_textual", "pq"])
def test_every_adapter_group_trains_and_evaluates(out_dir, adapter):
    module = build(out_dir, f"adapter={adapter}")
    module.train()
    loss = module.training_step(make_batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters() if p.requires_grad
    )
    module.eval()
    module.prompt_source = StubPrompts(1)
    with torch.no_grad():
        for shots in (0, 1):
            module.shots = shots
            if adapter == "pq" and shots == 0:
                with pytest.raises(ValueError, match="shots >= 1"):
                    module(make_batch())
                continue
            assert module(make_batch()).anomaly_map.shape == (3, SIZE, SIZE)


def test_a_few_training_steps_lower_the_loss(out_dir):
    module = build(out_dir).train()
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.5, 0.999)
    optimised = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert optimised == sum(module.trainable_parts().values())  # one optimiser for all adapters
    batch = make_batch()
    losses = []
    for step in range(6):
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_bad_training_input_fails_clearly(out_dir):
    module = build(out_dir).train()
    batch = make_batch()
    batch.image[1] = float("nan")
    with pytest.raises(FloatingPointError, match="/data/cable/1.png"):
        module.training_step(batch, 0)
    batch = make_batch()
    batch.normal_image = None
    with pytest.raises(ValueError, match="pair_normal"):
        module.training_step(batch, 0)
    assert module.training_step(make_batch(("bottle",)), 0) is None  # BatchNorm1d needs two images


def test_trainer_fit_and_checkpoint_round_trip(out_dir, tmp_path):
    module = build(out_dir)
    loader = DataLoader([make_batch(seed=s) for s in (1, 2)], batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=loader)
    path = tmp_path / "adaptclip.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    assert not any(k.startswith("backbone.") for k in state)
    assert int(state["adapters.visual.global_adapter.fc.1.num_batches_tracked"]) == 2
    restored = build(out_dir)  # the same random backbone; adapters overwritten below
    with torch.no_grad():
        for p in restored.adapters.parameters():
            p.normal_()
    restored.load_state_dict(state)
    batch = make_batch(seed=5)
    for m in (module, restored):
        m.eval().shots = 1
        m.prompt_source = StubPrompts(1)
    with torch.no_grad():
        a, b = module(batch), restored(batch)
    # Exact: equal weights, the same batch, the same process; any difference would be a lost parameter.
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)


@pytest.mark.parametrize("shots", [0, 2])
def test_shared_qkv_tower_keeps_the_maps_of_the_literal_one(out_dir, shots, monkeypatch):
    from test_backbone import literal_image_tower

    from clipad.backbone.clip_backbone import ImageFeatures

    module = build(out_dir).eval()
    module.shots, module.prompt_source = shots, StubPrompts(shots)
    batch = make_batch()
    with torch.no_grad():
        fused = module(batch)
        backbone = module.backbone

        def literal(images, value_value=False, **_):
            layers, last = literal_image_tower(backbone, images) if value_value else (None, None)
            return ImageFeatures([t[:, : 1 + backbone.num_patches] for t in layers], last, backbone.grid)

        monkeypatch.setattr(backbone, "encode_image", literal)
        module.clear_prompt_cache()
        reference = module(batch)
    # Summation order only (shared qkv, stacked attention calls): the 1e-6 fidelity bound of AdaptCLIP.
    torch.testing.assert_close(fused.anomaly_map, reference.anomaly_map, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused.score, reference.score, atol=1e-6, rtol=0)
