"""AdaCLIPModule: parameter counts, prompt options, maps and scores, HSF, training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from clipad.data.batch import Batch
from clipad.models.adaclip.hsf import HybridSemanticFusion, batched_kmeans
from clipad.models.adaclip.module import AdaCLIPModule
from clipad.models.adaclip.prompts import ImagePromptHook, StaticPrompts, TextPromptHook
from clipad.models.adaclip.text import state_sentences

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
TYPES = ("hybrid", "static", "dynamic", "none")
BRANCHES = ("V", "L", "VL")

# The reference sheet's table (ViT-L-14-336, defaults): trained parameters per part.
VIT_L_PARTS = {
    "static image prompts": 20_480,
    "static text prompts": 11_520,
    "dynamic image generator": 3_937_280,
    "dynamic text generator": 2_952_960,
    "patch projections": 3_148_800,
    "CLS projection": 590_592,
}


def make_cfg(*overrides: str, backbone: str = "tiny") -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "model=adaclip",
                f"backbone={backbone}",
                "data=mvtec",
                "paths.output_dir=/tmp/clipad-test",
                *overrides,
            ],
        )


def make_module(*overrides: str, seed: int = 0, backbone: str = "tiny", device: str = "cpu") -> AdaCLIPModule:
    torch.manual_seed(seed)
    return AdaCLIPModule(make_cfg(*overrides, backbone=backbone), device=device)


def make_batch(
    size: int = 224, names: tuple[str, ...] = ("bottle", "metal_nut", "bottle"), seed: int = 0
) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    count = len(names)
    image = torch.randn(count, 3, size, size, generator=generator)
    mask = torch.zeros(count, 1, size, size)
    mask[::2, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1.0
    return Batch(
        image=image,
        mask=mask,
        has_mask=torch.ones(count, dtype=torch.bool),
        label=(mask.flatten(1).amax(1) > 0).long(),
        cls_name=list(names),
        prompt_name=list(names),
        dataset=["mvtec"] * count,
        path=[f"/data/img{i}.png" for i in range(count)],
    )


def trainable_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------ parameter counts
def test_vit_l_default_trainable_parameters_match_the_reference_table():
    module = make_module(
        "backbone.pretrained=null", "backbone.allow_random=true", backbone="vit_l14_336", device="meta"
    )
    assert module.trainable_parts() == VIT_L_PARTS
    assert trainable_count(module) == 10_661_632
    assert sum(v.numel() for v in module.state_dict().values()) == 10_661_632
    assert not any(key.startswith("backbone.") for key in module.state_dict())


def expected_tiny_parts(kind: str, branch: str, length: int, depth: int) -> dict[str, int]:
    width = text_width = embed = 64  # clipad-tiny
    static = kind in ("hybrid", "static")
    dynamic = kind in ("hybrid", "dynamic")
    image = kind != "none" and "V" in branch
    text = kind != "none" and "L" in branch
    parts = {}
    if image and static:
        parts["static image prompts"] = depth * length * width
    if text and static:
        parts["static text prompts"] = (depth - 1) * length * text_width
    if image and dynamic:
        parts["dynamic image generator"] = length * (embed * width + width)
    if text and dynamic:
        parts["dynamic text generator"] = length * (embed * text_width + text_width)
    parts["patch projections"] = 4 * (width * embed + embed)
    parts["CLS projection"] = embed * embed + embed
    return parts


@pytest.mark.parametrize(
    ("kind", "branch", "length", "depth"),
    [
        ("hybrid", "VL", 5, 4),
        ("hybrid", "VL", 3, 4),
        ("hybrid", "VL", 5, 2),
        ("hybrid", "V", 5, 4),
        ("hybrid", "L", 5, 4),
        ("static", "VL", 5, 4),
        ("dynamic", "VL", 5, 4),
        ("none", "VL", 5, 4),
        ("none", "VL", 3, 2),
    ],
)
def test_prompt_options_change_only_their_parts(kind, branch, length, depth):
    module = make_module(
        f"prompt={kind}", f"prompt.branch={branch}", f"prompt.length={length}", f"prompt.depth={depth}"
    )
    assert module.trainable_parts() == expected_tiny_parts(kind, branch, length, depth)
    assert sum(module.trainable_parts().values()) == trainable_count(module)
    shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    if kind in ("hybrid", "static") and "V" in branch:
        assert shapes["image_static_prompts.tokens.0"] == (length, 64)
    if kind in ("hybrid", "dynamic") and "L" in branch:
        assert shapes["text_prompt_generator.heads.0.weight"] == (64, 64)


def test_prompt_group_overrides_need_model_adaclip():
    cfg = make_cfg("prompt=static", "prompt.length=3")
    assert (cfg.prompt.type, cfg.prompt.length, cfg.prompt.depth, cfg.prompt.branch) == ("static", 3, 4, "VL")
    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        compose("train", overrides=["model=clip", "backbone=tiny", "data=mvtec", "prompt=static"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["prompt.type=both"], "prompt.type"),
        (["prompt.branch=T"], "prompt.branch"),
        (["prompt.depth=1"], "prompt.depth=1"),  # text prompts need depth >= 2
        (["prompt.depth=9"], "prompt.depth=9"),
        (["model.hsf.variant=other"], "model.hsf.variant"),
    ],
)
def test_bad_prompt_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_module(*overrides)


# ------------------------------------------------------------------ forward and training
@pytest.mark.parametrize(
    ("kind", "branch"),
    [(kind, branch) for kind in TYPES if kind != "none" for branch in BRANCHES]
    + [("none", "VL")],  # none: no branch
)
def test_every_prompt_type_runs_and_trains_in_every_branch(kind, branch):
    module = make_module(f"prompt={kind}", f"prompt.branch={branch}", "backbone.image_size=96")
    batch = make_batch(size=96, names=("bottle", "metal_nut"))
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:  # every trained parameter is used: it gets a finite, non-zero gradient
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    module.eval()
    with torch.no_grad():
        output = module(batch)
    assert output.anomaly_map.shape == (2, 96, 96) and output.score.shape == (2,)
    assert float(output.anomaly_map.min()) >= 0 and float(output.anomaly_map.max()) <= 1
    assert float(output.score.min()) >= 0 and float(output.score.max()) <= 1


@pytest.mark.parametrize(
    "overrides",
    [[], ["prompt=dynamic", "model.hsf.variant=paper"], ["prompt=static", "model.hsf.enabled=false"]],
)
def test_a_batch_equals_single_image_calls(overrides):
    module = make_module(*overrides).eval()
    batch = make_batch()
    with torch.no_grad():
        together = module(batch)
        alone = [module(batch.subset(slice(i, i + 1))) for i in range(len(batch))]
    # Batch of B vs B batches of 1: CPU kernels sum in another order for other shapes (last-bit float32
    # differences, ~1e-7 after the tiny backbone's layers); 1e-5 leaves room for that and nothing more.
    torch.testing.assert_close(
        together.anomaly_map, torch.cat([o.anomaly_map for o in alone]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(together.score, torch.cat([o.score for o in alone]), atol=1e-5, rtol=0)


def test_vit_b16_shapes():
    module = make_module("backbone.pretrained=null", "backbone.allow_random=true", backbone="vit_b16").eval()
    assert module.trainable_parts()["dynamic text generator"] == 5 * (512 * 512 + 512)
    batch = make_batch(names=("bottle", "screw"))
    with torch.no_grad():
        output = module(batch)
    assert output.anomaly_map.shape == (2, 224, 224) and output.score.shape == (2,)
    assert torch.isfinite(output.anomaly_map).all() and torch.isfinite(output.score).all()


def test_training_steps_lower_the_loss():
    module = make_module("backbone.image_size=96").train()
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["betas"] == (0.5, 0.999)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trainable_count(
        module
    )
    batch = make_batch(size=96)
    losses = []
    for step in range(5):
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    module = make_module().train()
    batch = make_batch(names=("bottle",))
    results = []
    for checkpointing in (False, True):
        module.cfg.backbone.checkpoint_blocks = checkpointing
        module.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.parameters() if p.requires_grad]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for plain, checkpointed in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(plain, checkpointed, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_keeps_heads_and_losses_in_float32():
    module = make_module("backbone.image_size=96").train()
    batch = make_batch(size=96, names=("bottle", "screw"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.training_step(batch, 0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = module(batch)
    assert output.anomaly_map.dtype == torch.float32 and output.score.dtype == torch.float32


def test_non_finite_loss_stops_with_the_image_paths():
    module = make_module().train()
    with torch.no_grad():
        module.cls_projection.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="img1.png"):
        module.training_step(make_batch(), 3)


def test_features_computed_for_validation_can_be_reused_in_training():
    # Lightning validates under inference mode; those cached text features must not reach autograd.
    module = make_module("prompt.branch=V", "backbone.image_size=96").eval()
    batch = make_batch(size=96, names=("bottle",))
    with torch.inference_mode():
        module(batch)
    module.train()
    module.training_step(batch, 0).backward()


# ------------------------------------------------------------------ text side
def test_object_aware_sentences():
    normal, abnormal = state_sentences("metal_nut")
    assert len(normal) == 28 and len(abnormal) == 20
    assert normal[0] == "a bad photo of a metal_nut."
    assert normal[-1] == "a cropped photo of the metal_nut without damage."
    assert abnormal[0] == "a bad photo of a damaged metal_nut."


def count_text_calls(module: AdaCLIPModule) -> list[int]:
    """Sentences per text-tower call, padded (encode_text) or packed (encode_packed_text) alike."""
    calls: list[int] = []
    encode, encode_packed = module.backbone.encode_text, module.backbone.encode_packed_text

    def counting(token_ids, before_block=None):
        calls.append(token_ids.shape[0])
        return encode(token_ids, before_block=before_block)

    def counting_packed(packed, before_block=None):
        calls.append(packed.eot.numel())
        return encode_packed(packed, before_block=before_block)

    module.backbone.encode_text = counting
    module.backbone.encode_packed_text = counting_packed
    return calls


def padded_text_features(module: AdaCLIPModule, names: list[str], dynamic: torch.Tensor | None) -> torch.Tensor:
    """The text tower on the padded [T, L] sentences, prompts written into every sentence (no packing)."""
    tokens = torch.cat([module._sentences(name) for name in names])
    per_name = tokens.shape[0] // len(names)
    rows = dynamic.repeat_interleave(per_name, dim=0) if dynamic is not None else None
    p = module.prompt_settings
    hook = TextPromptHook(module.text_static_prompts, rows, p.depth, p.length)
    return module.backbone.encode_text(tokens, before_block=hook).unflatten(0, (len(names), per_name))


def randomise_trained_parameters(module: AdaCLIPModule) -> None:
    """Larger random prompts than the 0.02 init, so that a wrong packing would show in the maps."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.mark.parametrize(
    ("backbone", "overrides", "names"),
    [("tiny", [], ("bottle", "metal_nut", "bottle")), ("tiny", ["prompt=static"], ("bottle", "metal_nut")),
     ("tiny", ["prompt.length=3", "prompt.depth=3"], ("bottle", "metal_nut")),
     ("vit_b16", ["backbone.pretrained=null", "backbone.allow_random=true"], ("metal_nut",))],
)
def test_packed_text_tower_gives_the_padded_maps(monkeypatch, backbone, overrides, names):
    size = 112 if backbone == "tiny" else 64  # ViT-B-16: its text tower is the part under test
    module = make_module(f"backbone.image_size={size}", *overrides, backbone=backbone).eval()
    randomise_trained_parameters(module)
    batch = make_batch(size=size, names=names)
    with torch.no_grad():
        packed = module(batch)
        monkeypatch.setattr(module, "_encode_prompted_sentences", lambda names, dynamic: padded_text_features(
            module, names, dynamic))
        module._text_cache = {}
        padded = module(batch)
    # Packed vs padded sentences: the same sums over other shapes (float32 summation order only); the
    # issue's bound on the maps is 1e-5.
    torch.testing.assert_close(packed.anomaly_map, padded.anomaly_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.raw_map, padded.raw_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.score, padded.score, atol=1e-5, rtol=0)


def test_packed_text_tower_gives_the_padded_gradients():
    module = make_module("backbone.image_size=96").train()
    randomise_trained_parameters(module)
    dynamic = module.text_prompt_generator(torch.randn(2, 64))
    names = ["bottle", "screw"]
    packed = module._encode_prompted_sentences(names, dynamic)
    grads_packed = torch.autograd.grad(packed.square().sum(), module.text_static_prompts.tokens[0])
    padded = padded_text_features(module, names, dynamic)
    grads_padded = torch.autograd.grad(padded.square().sum(), module.text_static_prompts.tokens[0])
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)  # summation order only, as above
    torch.testing.assert_close(grads_packed[0], grads_padded[0], atol=1e-4, rtol=1e-4)


def test_text_features_without_text_prompts_are_constant_per_class_and_cached():
    module = make_module("prompt.branch=V").train()
    calls = count_text_calls(module)
    first = module.text_features(["bottle", "screw", "bottle"])
    torch.testing.assert_close(first[0], first[2])
    again = module.text_features(["screw", "bottle"])  # with gradients on: still cached (no text parameters)
    assert calls == [96]  # one call: 48 sentences x 2 distinct names
    torch.testing.assert_close(again, first[[1, 0]])
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(3, 2))


def test_static_text_features_cached_in_eval_and_refreshed_when_prompts_change():
    module = make_module("prompt=static").eval()
    calls = count_text_calls(module)
    with torch.no_grad():
        before = module.text_features(["bottle"])
        module.text_features(["bottle"])
        assert calls == [48]
        module.text_static_prompts.tokens[0].add_(1.0)  # as an optimizer step would
        after = module.text_features(["bottle"])
    assert calls == [48, 48]
    assert not torch.allclose(before, after)
    module.train()
    module.text_features(["bottle"])
    module.text_features(["bottle"])  # with gradients: computed every time, never cached
    assert calls == [48, 48, 48, 48]


def test_dynamic_text_features_are_per_image_in_one_call():
    module = make_module().eval()  # hybrid VL
    calls = count_text_calls(module)
    with torch.no_grad():
        module(make_batch(names=("bottle", "bottle", "screw")))
        text = module.text_features(["bottle", "bottle"], torch.randn(2, 64))
    assert calls[0] == 3 * 48
    assert not torch.allclose(text[0], text[1])


def test_text_prompts_never_overwrite_end_of_text():
    module = make_module("prompt.length=8").eval()  # "a bad photo of a bottle." ends at position 8
    with pytest.raises(ValueError, match="end-of-text"), torch.no_grad():
        module(make_batch(names=("bottle",)))
    make_module("prompt.length=7").eval().text_features(["bottle"], torch.randn(1, 64))


# ------------------------------------------------------------------ hooks
def test_image_hook_appends_at_block_0_then_replaces():
    static = StaticPrompts(blocks=3, length=2, width=4)
    dynamic = torch.randn(2, 2, 4)
    hook = ImagePromptHook(static, dynamic, depth=3, length=2)
    x = torch.randn(2, 5, 4)
    y = hook(0, x)
    assert y.shape == (2, 7, 4)
    torch.testing.assert_close(y[:, :5], x)
    torch.testing.assert_close(y[:, 5:], static.tokens[0].detach() + dynamic)
    z = hook(2, y)
    torch.testing.assert_close(z[:, :5], x)
    torch.testing.assert_close(z[:, 5:], static.tokens[2].detach() + dynamic)
    assert hook(3, z) is z


def test_text_hook_overwrites_positions_after_start_of_text_from_block_1():
    static = StaticPrompts(blocks=2, length=2, width=4)  # used before blocks 1 and 2
    hook = TextPromptHook(static, None, depth=3, length=2)
    x = torch.randn(6, 9, 4)
    assert hook(0, x) is x and hook(3, x) is x
    y = hook(2, x)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    torch.testing.assert_close(y[:, 1:3], static.tokens[1].detach().expand(6, -1, -1))
    torch.testing.assert_close(y[:, 3:], x[:, 3:])


# ------------------------------------------------------------------ hybrid semantic fusion
def test_kmeans_finds_separated_blobs_deterministically_and_per_image():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centres.repeat_interleave(10, 0) + 0.1 * torch.randn(30, 2, generator=generator)).unsqueeze(0)
    shuffled = points[:, torch.randperm(30, generator=generator)]
    batch = torch.cat([points, shuffled])
    assignment = batched_kmeans(batch, clusters=3, iters=20, seed=111)
    for blob in assignment[0].view(3, 10):
        assert len(set(blob.tolist())) == 1
    assert len(set(assignment[0].tolist())) == 3
    torch.testing.assert_close(assignment, batched_kmeans(batch, clusters=3, iters=20, seed=111))
    torch.testing.assert_close(assignment[1:], batched_kmeans(shuffled, clusters=3, iters=20, seed=111))


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("patches", [7, 50])
def test_hsf_has_no_nan_with_empty_clusters_or_few_patches(variant, patches):
    fusion = HybridSemanticFusion(variant=variant, clusters=20, top_k_factor=5)
    same = F.normalize(torch.ones(2, patches, 8), dim=-1)  # identical points: most clusters stay empty
    tokens = [same.clone().requires_grad_(True) for _ in range(4)]
    fused = fusion(tokens, torch.rand(2, patches))
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, same[:, 0])
    random_tokens = [F.normalize(torch.randn(2, patches, 8), dim=-1).requires_grad_(True) for _ in range(4)]
    fused = fusion(random_tokens, torch.rand(2, patches))
    fused.sum().backward()  # gradients flow through the pooled tokens
    assert torch.isfinite(fused).all() and all(torch.isfinite(t.grad).all() for t in random_tokens)
    assert any(t.grad.abs().sum() > 0 for t in random_tokens)


def test_hsf_reference_variant_with_one_cluster_is_the_mean_of_the_top_patches():
    generator = torch.Generator().manual_seed(1)
    tokens = [F.normalize(torch.randn(1, 30, 8, generator=generator), dim=-1) for _ in range(4)]
    scores = torch.rand(1, 30, generator=generator)
    fused = HybridSemanticFusion(variant="reference", clusters=1, top_k_factor=5)(tokens, scores)
    top = scores[0].topk(5).indices
    expected = F.normalize(torch.stack(tokens)[:, 0, top].mean(dim=(0, 1)), dim=-1)
    torch.testing.assert_close(fused[0], expected)


def test_hsf_paper_variant_takes_the_most_anomalous_cluster():
    generator = torch.Generator().manual_seed(2)
    blob_a = torch.tensor([1.0, 0, 0, 0]) + 0.01 * torch.randn(10, 4, generator=generator)
    blob_b = torch.tensor([0, 1.0, 0, 0]) + 0.01 * torch.randn(10, 4, generator=generator)
    averaged = torch.cat([blob_a, blob_b]).unsqueeze(0)
    scores = torch.cat([torch.full((10,), 0.2), torch.full((10,), 0.9)]).unsqueeze(0)
    fused = HybridSemanticFusion(variant="paper", clusters=2)([averaged] * 4, scores)
    torch.testing.assert_close(fused[0], F.normalize(blob_b.mean(0), dim=-1))


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip(tmp_path):
    trained = make_module(seed=0).train()
    optimizer = trained.configure_optimizers()
    batch = make_batch(names=("bottle",))
    trained.training_step(batch, 0).backward()
    optimizer.step()
    state = trained.state_dict()
    assert set(state) == {name for name, p in trained.named_parameters() if p.requires_grad}
    torch.save(state, tmp_path / "adaclip.pt")

    fresh = make_module(seed=0)  # same random backbone, prompts re-initialised
    fresh.load_state_dict(torch.load(tmp_path / "adaclip.pt", weights_only=True))
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    trained.eval(), fresh.eval()
    with torch.no_grad():  # exact: equal weights, the same batch, the same process
        a, b = trained(batch), fresh(batch)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map, rtol=0, atol=0)
    torch.testing.assert_close(a.score, b.score, rtol=0, atol=0)
