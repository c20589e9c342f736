"""ONNX export: onnxruntime equals the module's own forward (tiny backbone), batch size stays dynamic."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.export import main as export_main
from clipad.cli.hydra_setup import compose_config
from clipad.data.batch import Batch
from clipad.models.registry import build_module
from clipad.onnx_export import export_onnx

SIZE = 112  # the tiny backbone at half its default input size: the same graph, a quarter of the work


def tiny_module(model: str, *extra: str):
    cfg = compose_config(
        "train", [f"model={model}", "backbone=tiny", "data=mvtec", "callbacks=none", "logger=none",
                  "paths.output_dir=.", f"backbone.image_size={SIZE}", *extra],
    )
    torch.manual_seed(0)
    return build_module(cfg).eval()


class RandomPrompts:
    """Normal prompt images for few-shot AdaptCLIP: fixed random tensors."""

    def __init__(self, shots: int) -> None:
        self.images = torch.randn(shots, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        return self.images


def module_output(module, images: torch.Tensor, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    count = images.shape[0]
    batch = Batch(
        image=images, mask=images.new_zeros(count, 1, SIZE, SIZE), has_mask=torch.zeros(count, dtype=torch.bool),
        label=torch.zeros(count, dtype=torch.long), cls_name=[class_name] * count,
        prompt_name=[class_name] * count, dataset=["export"] * count, path=[""] * count,
    )
    with torch.no_grad():
        output = module(batch)
    return output.anomaly_map.numpy(), output.score.numpy()


def assert_parity(module, path: Path, class_name: str, batches: tuple[int, ...]) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for count in batches:
        images = torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(count))
        onnx_map, onnx_score = session.run(["anomaly_map", "score"], {"image": images.numpy()})
        torch_map, torch_score = module_output(module, images, class_name)
        # Another runtime with its own kernels and fusions (and batch shapes): rounding differs from torch's;
        # 1e-4 on values in [0, 1] is well above float32 rounding through the graph, far below a wrong op.
        assert onnx_map.shape == (count, SIZE, SIZE) and onnx_score.shape == (count,)
        np.testing.assert_allclose(onnx_map, torch_map, atol=1e-4, rtol=0)
        np.testing.assert_allclose(onnx_score, torch_score, atol=1e-4, rtol=0)


def initializer_shapes(path: Path) -> list[tuple[int, ...]]:
    return [tuple(t.dims) for t in onnx.load(str(path)).graph.initializer]


@pytest.fixture(scope="module")
def clip_module():
    return tiny_module("clip")


def test_clip_baseline_parity_dynamic_batch_fixed_name_and_no_text_tower(clip_module, tmp_path):
    path = export_onnx(clip_module, "screw", tmp_path / "screw.onnx")
    assert_parity(clip_module, path, "screw", batches=(1, 3))
    # The text features are a constant: the token embedding table (vocabulary x width) is not in the file.
    vocabulary = clip_module.backbone.clip.token_embedding.weight.shape
    assert tuple(vocabulary) not in initializer_shapes(path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["class_name"] == "screw" and metadata["image_size"] == str(SIZE)
    assert metadata["random_backbone"] == "true" and metadata["batch"] == "dynamic"
    # Another object name is another graph.
    other = export_onnx(clip_module, "cable", tmp_path / "cable.onnx")
    images = torch.randn(1, 3, SIZE, SIZE).numpy()
    scores = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["score"], {"image": images})[0]
              for p in (path, other)]
    assert not np.allclose(scores[0], scores[1])


def test_adaptclip_parity_zero_and_one_shot(tmp_path):
    module = tiny_module("adaptclip")
    vocabulary = module.backbone.clip.token_embedding.weight.shape
    for shots in (0, 1):
        module.shots = shots
        module.prompt_source = RandomPrompts(shots) if shots else None
        path = export_onnx(module, "object", tmp_path / f"adaptclip_{shots}.onnx")
        assert_parity(module, path, "object", batches=(1, 3) if shots == 0 else (2,))
        assert tuple(vocabulary) not in initializer_shapes(path)  # fixed and learnt text are constants


def test_adaclip_parity_static_and_dynamic_text_prompts(tmp_path):
    """Without hybrid semantic fusion (see the next test): prompt hooks and per-image text towers export."""
    static = tiny_module("adaclip", "prompt=static", "model.hsf.enabled=false")  # text: class name only
    path = export_onnx(static, "bottle", tmp_path / "static.onnx")
    assert_parity(static, path, "bottle", batches=(1, 3))
    hybrid = tiny_module("adaclip", "model.hsf.enabled=false")  # hybrid, branch VL: text depends on each image
    path = export_onnx(hybrid, "bottle", tmp_path / "hybrid.onnx", batch=2)
    assert_parity(hybrid, path, "bottle", batches=(2,))
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["batch"] == "2"


def test_adaclip_parity_with_hybrid_semantic_fusion(tmp_path):
    module = tiny_module("adaclip", "prompt=static")
    path = export_onnx(module, "bottle", tmp_path / "adaclip.onnx")
    assert_parity(module, path, "bottle", batches=(1, 3))


def test_export_command_reports_size_parity_and_latency(clip_module, tmp_path, capsys):
    ckpt = save_clipad_checkpoint(tmp_path / "clip.ckpt", clip_module)
    status = export_main([f"ckpt_path={ckpt}", f"output={tmp_path / 'm.onnx'}", "class_name=pill", "batch=2"])
    printed = capsys.readouterr().out
    assert status == 0
    assert (tmp_path / "m.onnx").is_file()
    assert "MB" in printed and "RANDOM backbone" in printed and "OK" in printed
    assert "onnxruntime" in printed and "ms" in printed


def test_latency_check_warms_both_runtimes_then_times_them_in_turns():
    from clipad.onnx_export import warm_medians_ms

    calls: list[str] = []
    slow = lambda: calls.append("torch") or time.sleep(0.02)  # noqa: E731
    fast = lambda: calls.append("onnx")  # noqa: E731
    torch_ms, onnx_ms = warm_medians_ms([slow, fast], repeats=3, warmup=2)
    assert calls == ["torch"] * 2 + ["onnx"] * 2 + ["torch", "onnx"] * 3  # warm-ups untimed, then in turns
    assert torch_ms >= 20 > onnx_ms  # medians of the timed calls only
