"""ONNX export of a trained model's test-time graph for one fixed object name.

The exported graph maps `image` [B, 3, S, S] (resized to the backbone's input size and normalised with its
mean/std, exactly as the data pipeline does) to `anomaly_map` [B, S, S] and `score` [B]. Text features that
do not depend on the image (the CLIP baseline, AdaCLIP without dynamic text prompts, AnomalyCLIP's learnt
prompts, AdaptCLIP's fixed and learnt text, AdaptCLIP's few-shot prompt memory) are computed once here and
stored in the graph as constants,
so the text tower is not part of the file, and the batch size is dynamic. AdaCLIP's dynamic text prompts
make the text features a function of each image: its text tower stays in the graph (token ids fixed) and the
graph is traced for a fixed batch size.

torch.onnx's TorchScript exporter is used (`dynamo=False`): the dynamo exporter needs onnxscript, which
clipad does not depend on.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipad.data.batch import AnomalyOutput, Batch
from clipad.models.adaptclip.fusion import few_shot_fusion, zero_shot_fusion
from clipad.models.adaptclip.prompt_query import align_layers, alignment_map
from clipad.models.adaptclip.scoring import score_against_text
from clipad.models.base import AnomalyModule

INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
EXPORT_DATASET = "export"  # the dataset name under which few-shot prompt images are requested


def single_class_batch(images: torch.Tensor, class_name: str, names: int = 1) -> Batch:
    """A Batch whose images all show one object, with `names` copies of its prompt name.

    With one name, the module's text features have batch size 1 and broadcast over the images, so the
    traced graph keeps the batch size dynamic (a list of B names fixes B at trace time). The masks and
    labels are empty: a test-time forward does not read them.
    """
    empty = images.new_zeros(0)
    return Batch(
        image=images, mask=empty, has_mask=empty.bool(), label=empty.long(), cls_name=[class_name] * names,
        prompt_name=[class_name] * names, dataset=[EXPORT_DATASET] * names, path=[""] * names,
    )


class SingleClassGraph(nn.Module):
    """The module's own forward with one class name (CLIP baseline, AdaCLIP, AnomalyCLIP: its object-agnostic
    text ignores the name).

    Before tracing, one eager call fills the module's text-feature cache for the name: the traced
    forward then reads the cached tensor, which the exporter stores as a constant. Text features that
    depend on the image (AdaCLIP's dynamic text prompts) need one name per image: `fixed_batch` images.
    """

    def __init__(self, module: AnomalyModule, class_name: str, fixed_batch: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.class_name = class_name
        self.fixed_batch = fixed_batch

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.module(single_class_batch(image, self.class_name, self.fixed_batch or 1))
        return output.anomaly_map, output.score


class AdaptCLIPGraph(nn.Module):
    """AdaptCLIP's test-time forward for one class with its text (and few-shot prompt memory) as constants.

    Written against the module's public parts: its forward groups queries by (dataset, class) per image and
    runs the textual adapter's text tower on every call, neither of which a fixed-class graph needs.
    """

    def __init__(self, module: AnomalyModule, class_name: str) -> None:
        super().__init__()
        self.module = module
        adapters = module.adapters
        with torch.no_grad():
            visual = module.hand_made_text().clone() if adapters.visual is not None else None
            textual = adapters.textual(module.backbone).clone() if adapters.textual is not None else None
            memory = module.prompt_memory(EXPORT_DATASET, class_name) if module.shots > 0 else []
        self.register_buffer("visual_text", visual)
        self.register_buffer("textual_text", textual)
        for index, layer in enumerate(memory):
            self.register_buffer(f"memory_{index}", layer.clone())
        self.memory_layers = len(memory)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        module, adapters = self.module, self.module.adapters
        grid, size = module.backbone.grid, tuple(image.shape[-2:])
        query = module.features(image)
        branches = []
        if self.visual_text is not None:
            global_embedding, tokens = adapters.visual(query.global_embedding, query.tokens[-1])
            branches.append(score_against_text(global_embedding, tokens[:, 1:], self.visual_text,
                                               module.temperature, grid, size))
        if self.textual_text is not None:
            branches.append(score_against_text(query.global_embedding, query.tokens[-1][:, 1:], self.textual_text,
                                               module.temperature, grid, size))
        maps = [b.anomaly_map for b in branches]
        scores = [b.score for b in branches]
        if self.memory_layers == 0:
            output = zero_shot_fusion(maps, scores, module.smooth)
            return output.anomaly_map, output.score
        queries = query.unit_patches()
        memory = [getattr(self, f"memory_{i}") for i in range(self.memory_layers)]
        aligned = align_layers(queries, memory)
        if adapters.prompt_query is not None:
            outputs = adapters.prompt_query(queries, aligned, grid, size)
            maps.append(torch.stack([o.anomaly_map for o in outputs]).mean(dim=0))
            scores.append(torch.stack([o.score for o in outputs]).mean(dim=0))
        output = few_shot_fusion(maps, scores, alignment_map(aligned, grid, size, module.clamp_align_distance),
                                     module.smooth)
        return output.anomaly_map, output.score


def untraceable_hint(module: AnomalyModule) -> str:
    """What to do when tracing fails; AdaCLIP's hybrid semantic fusion is the known case."""
    if getattr(module, "fusion", None) is not None:
        return (
            "AdaCLIP's hybrid semantic fusion runs a seeded k-means whose random draws and early stop cannot be "
            "traced. Export with model.hsf.enabled=false: the anomaly maps are the same, the image score then "
            "comes from the CLS embedding alone."
        )
    return "see the exporter's error above"


def text_depends_on_image(module: AnomalyModule) -> bool:
    """AdaCLIP's dynamic text prompts make the text features a function of each image."""
    return getattr(module, "text_prompt_generator", None) is not None


def export_graph(module: AnomalyModule, class_name: str, fixed_batch: int | None = None) -> nn.Module:
    """The fixed-class graph of a module (eval mode), ready to trace; fixed_batch only for per-image text."""
    name = module.cfg.model.name
    module.eval()
    if name == "adaptclip":
        return AdaptCLIPGraph(module, class_name).eval()
    if name not in ("clip", "adaclip", "anomalyclip", "winclip"):
        raise ValueError(
            f"model.name={name!r} has no ONNX export graph (known: clip, adaclip, adaptclip, anomalyclip, winclip)"
        )
    graph = SingleClassGraph(module, class_name, fixed_batch).eval()
    size = module.backbone.image_size
    with torch.no_grad():  # fills the module's text cache before tracing
        graph(torch.zeros(fixed_batch or 1, 3, size, size, device=module.device))
    return graph


@contextlib.contextmanager
def without_attention_fastpath() -> Iterator[None]:
    """nn.MultiheadAttention's fused inference kernel has no ONNX form: trace the composite ops instead."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx(module: AnomalyModule, class_name: str, path: str | Path, opset: int = 17, batch: int = 1) -> Path:
    """Write the ONNX file with its metadata (class name, input size, mean/std, model, random backbone).

    The batch axis is dynamic, except for AdaCLIP with dynamic text prompts: its text tower runs per image
    on sentence tokens replicated per image, so the graph is traced for exactly `batch` images.
    """
    import onnx  # the `export` extra: clipad itself runs without it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fixed_batch = batch if text_depends_on_image(module) else None
    graph = export_graph(module, class_name, fixed_batch)
    size = module.backbone.image_size
    # Tracing with 2 images when the batch is dynamic: a size-1 batch dimension could be traced as a constant.
    example = torch.randn(fixed_batch or 2, 3, size, size, device=module.device)
    dynamic = None if fixed_batch else {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with torch.no_grad(), without_attention_fastpath(), warnings.catch_warnings():
        # Expected: the tracer turns shapes and the cached text features into constants (see SingleClassGraph),
        # and the exporter warns about negative gather indices, which these graphs never use (arange, argmax).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        try:
            # No constant folding: it would store transposed copies of the attention weights that AdaptCLIP's
            # v-v path shares with the ordinary path (+86 MB on ViT-B-16); onnxruntime folds at load time.
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                              do_constant_folding=False)
        except torch.onnx.errors.OnnxExporterError as error:
            hint = untraceable_hint(module)
            raise RuntimeError(f"ONNX export of model={module.cfg.model.name} failed: {hint}") from error
    model = onnx.load(str(path))
    cfg = module.cfg
    metadata = {
        "clipad_model": cfg.model.name,
        "backbone": cfg.backbone.name,
        "random_backbone": str(module.backbone.is_random).lower(),
        "class_name": class_name,
        "shots": str(getattr(module, "shots", 0)),
        "batch": str(fixed_batch) if fixed_batch else "dynamic",
        "image_size": str(size),
        "mean": ",".join(str(v) for v in cfg.backbone.mean),
        "std": ",".join(str(v) for v in cfg.backbone.std),
        "input": "RGB resized to image_size (bicubic), scaled to [0, 1], normalised with mean/std",
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@dataclass
class ParityReport:
    batch: int
    map_max_abs_diff: float
    score_max_abs_diff: float
    torch_ms_per_image: float
    onnx_ms_per_image: float
    timed_calls: int  # warm calls per runtime behind each median

    def close(self, atol: float = 1e-4) -> bool:
        return self.map_max_abs_diff <= atol and self.score_max_abs_diff <= atol


def onnx_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort  # the `export` extra: clipad itself runs without it

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def warm_medians_ms(runs: list[Callable[[], object]], repeats: int, warmup: int = 2) -> list[float]:
    """Median wall time of each run over `repeats` calls, after `warmup` untimed calls of each.

    The runs take turns call by call, so that a change of load on a shared machine hits all of them alike.
    """
    for run in runs:
        for _ in range(warmup):  # first calls allocate, pick kernels and fill caches (text features)
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) * 1000 for spent in times]


def compare_with_torch(module: AnomalyModule, class_name: str, path: str | Path, batch: int = 2,
                       repeats: int = 5, seed: int = 0, threads: int | None = None) -> ParityReport:
    """ONNX Runtime against the module's own forward on the same random input, and both latencies (CPU):
    medians of `repeats` warm calls each (see warm_medians_ms).

    threads: CPU threads of both runtimes (None: each library's default).
    """
    if threads:
        torch.set_num_threads(threads)
    size = module.backbone.image_size
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    session = onnx_session(path, threads)
    feed = {INPUT_NAME: images.numpy()}
    onnx_map, onnx_score = session.run(list(OUTPUT_NAMES), feed)
    module_batch = single_class_batch(images.to(module.device), class_name, names=batch)
    module.eval()
    with torch.no_grad():
        reference: AnomalyOutput = module(module_batch)
        torch_ms, onnx_ms = warm_medians_ms(
            [lambda: module(module_batch), lambda: session.run(list(OUTPUT_NAMES), feed)], repeats
        )
    return ParityReport(
        batch=batch,
        map_max_abs_diff=float(np.abs(onnx_map - reference.anomaly_map.float().cpu().numpy()).max()),
        score_max_abs_diff=float(np.abs(onnx_score - reference.score.float().cpu().numpy()).max()),
        torch_ms_per_image=torch_ms / batch,
        onnx_ms_per_image=onnx_ms / batch,
        timed_calls=repeats,
    )
