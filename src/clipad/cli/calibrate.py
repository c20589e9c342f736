"""`python -m clipad.calibrate ckpt_path=... data=X rule=normal_quantile q=0.99`: decision thresholds.

Scores calibration images with the checkpoint's model (never the test labels) and writes the thresholds
file (clipad.calibration.thresholds). Sources: normal_quantile takes the normals of each target's
train/good split (source=train), the k-shot normals (source=shots, shots=k) or a folder of good parts
(normals_dir=...); val_f1 takes the labelled data.val set; fixed takes value= (and pixel_value=).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from clipad.calibration.calibrate import BootstrapSpread, bootstrap_false_rejects, calibrate_groups
from clipad.calibration.scoring import GroupScores, score_batches
from clipad.calibration.thresholds import RULES, ClassThreshold, DecisionThresholds
from clipad.cli.hydra_setup import command_line_overrides
from clipad.cli.inference import PREDICT_DATASET, batch_of, load_module, model_input, resolve_device
from clipad.cli.predict_inputs import ImageFileDataset, collate_images, list_input_images
from clipad.cli.shot_grid import set_point
from clipad.data.bad_inputs import BadInput, BadInputLog
from clipad.data.batch import Batch
from clipad.data.datamodule import AnomalyDataModule
from clipad.errors import ClipadError
from clipad.metrics.results import format_percent
from clipad.models.base import AnomalyModule

log = logging.getLogger(__name__)
SOURCES = ("train", "shots")


def _train_normals(datamodule: AnomalyDataModule, without_prompts: bool) -> Iterator[Batch]:
    """Each target's train/good images; a few-shot model's own prompt images are left out (it would score
    them as perfect matches, pulling the thresholds down)."""
    for dataset in datamodule.test_datasets:
        prompts = {sample for cls_name in datamodule.classes(dataset)
                   for sample in datamodule.prompt_sample_ids(dataset, cls_name)} if without_prompts else set()
        yield from datamodule.normal_loader(dataset, "train", exclude=prompts)


def _shot_normals(datamodule: AnomalyDataModule, device: str) -> Iterator[Batch]:
    for dataset in datamodule.test_datasets:
        for cls_name in datamodule.classes(dataset):
            images = datamodule.normal_prompt_images(dataset, cls_name).to(device)
            count = images.shape[0]
            yield Batch(image=images, mask=images.new_zeros(count, 1, *images.shape[-2:]),
                        has_mask=torch.zeros(count, dtype=torch.bool, device=device),
                        label=torch.zeros(count, dtype=torch.long, device=device), cls_name=[cls_name] * count,
                        prompt_name=[datamodule.prompt_name(dataset, cls_name)] * count, dataset=[dataset] * count,
                        path=[f"{dataset}/{cls_name}/shot{i}" for i in range(count)])


def _folder_normals(cfg: DictConfig, module: AnomalyModule, device: str, bad_inputs: BadInputLog) -> Iterator[Batch]:
    listing = list_input_images(str(cfg.normals_dir))
    loader = DataLoader(ImageFileDataset(listing.paths, model_input(module), previews=False),
                        batch_size=int(cfg.batch_size), collate_fn=collate_images)
    for loaded in loader:
        for path, reason in loaded.unreadable:
            log.warning("normals_dir: skipped unreadable image %s: %s", path, reason)
            bad_inputs.record([BadInput("unreadable", path, PREDICT_DATASET, str(cfg.class_name), reason)])
        if loaded.images is not None:
            yield batch_of(loaded, str(cfg.class_name), device)


def _check_options(cfg: DictConfig) -> None:
    if cfg.rule not in RULES:
        raise ClipadError(f"rule={cfg.rule}: choose one of {', '.join(RULES)}")
    if cfg.rule == "fixed" and cfg.value is None:
        raise ClipadError("rule=fixed needs value=... (the image threshold; pixel_value=... for the maps)")
    if cfg.rule == "normal_quantile" and not (cfg.q is not None and 0 < float(cfg.q) <= 1):
        raise ClipadError(f"q={cfg.q}: the normal quantile must lie in (0, 1], e.g. q=0.99 (at most 1 % false rejects)")
    if cfg.rule == "normal_quantile" and not cfg.normals_dir and cfg.source not in SOURCES:
        raise ClipadError(f"source={cfg.source}: choose one of {', '.join(SOURCES)}, or give normals_dir=FOLDER")
    if cfg.rule == "normal_quantile" and cfg.source == "shots" and not cfg.normals_dir and int(cfg.shots) < 1:
        raise ClipadError("source=shots needs shots=k (k >= 1 normal images per class)")


@dataclass
class CalibrationSet:
    batches: Iterator[Batch]  # what to score
    source: str  # where the images come from, as the thresholds file says
    all_normal: bool
    bad_inputs: BadInputLog  # the files skipped on the way, stated at the end


def _calibration_batches(cfg: DictConfig, module: AnomalyModule, device: str) -> CalibrationSet:
    if cfg.rule == "normal_quantile" and cfg.normals_dir:
        if getattr(module, "shots", 0):
            raise ClipadError("normals_dir calibration runs the model zero-shot; leave shots out (shots=0)")
        bad_inputs = BadInputLog()
        return CalibrationSet(_folder_normals(cfg, module, device, bad_inputs), f"good parts in {cfg.normals_dir}",
                              True, bad_inputs)
    datamodule = AnomalyDataModule.from_config(module.cfg)
    few_shot = hasattr(module, "prompt_source")
    if few_shot:
        set_point(module, datamodule, int(cfg.shots), int(cfg.few_shot_seed))
        module.prompt_source = datamodule
    targets = ", ".join(datamodule.test_datasets)
    if cfg.rule == "val_f1":
        if datamodule.val_set is None:
            datamodule.setup("validate")
        if datamodule.val_set is None:
            raise ClipadError("rule=val_f1 needs a labelled validation set: data.val=NAME")
        return CalibrationSet(iter(datamodule.val_dataloader()), f"labelled validation set {datamodule.val_dataset}",
                              False, datamodule.bad_inputs)
    if cfg.source == "shots":
        if few_shot:
            raise ClipadError(
                f"source=shots with model={module.cfg.model.name}: a few-shot model scores its own prompt "
                "images as perfect matches, so the thresholds would be far too low. Use source=train or "
                "normals_dir=FOLDER of other good parts"
            )
        return CalibrationSet(_shot_normals(datamodule, device), f"{cfg.shots}-shot normals of {targets}", True,
                              datamodule.bad_inputs)
    without_prompts = few_shot and int(cfg.shots) > 0
    note = f" without the {cfg.shots} prompt images per class" if without_prompts else ""
    return CalibrationSet(_train_normals(datamodule, without_prompts), f"train/good of {targets}{note}", True,
                          datamodule.bad_inputs)


def print_thresholds(thresholds: DecisionThresholds) -> None:
    print(f"\nThresholds ({thresholds.describe()}):")
    print("| dataset | class | images | image threshold | pixel threshold |")
    print("|---|---|---:|---:|---:|")

    def line(dataset: str, cls_name: str, t: ClassThreshold) -> None:
        pixel = "-" if t.pixel is None else f"{t.pixel:.6g}"
        images = "-" if t.images is None else str(t.images)
        print(f"| {dataset} | {cls_name} | {images} | {t.image:.6g} | {pixel} |")

    for dataset, classes in thresholds.classes.items():
        for cls_name, t in classes.items():
            line(dataset, cls_name, t)
    line("global", "(fallback)", thresholds.fallback)


def print_bootstrap(spread: BootstrapSpread, counts: dict[tuple[str, str], int]) -> None:
    def percent(mean_std: tuple[float, float]) -> str:
        return f"{format_percent(mean_std[0])} % ± {format_percent(mean_std[1])} %"

    print(f"false-reject rate on left-out normals over {spread.draws} bootstrap draws: {percent(spread.overall)}")
    for (dataset, cls_name), mean_std in spread.per_class.items():
        print(f"  {dataset}/{cls_name} ({counts[(dataset, cls_name)]} normals): {percent(mean_std)}")


def calibrate(cfg: DictConfig, overrides: list[str] | None = None) -> DecisionThresholds:
    _check_options(cfg)
    output = Path(cfg.output) if cfg.output else Path(cfg.ckpt_path).expanduser().parent / "thresholds.json"
    device = resolve_device(str(cfg.device))
    module = load_module(cfg, command_line_overrides() if overrides is None else overrides, device)
    random_backbone = module.backbone.is_random
    common = {"checkpoint": str(cfg.ckpt_path), "random_backbone": random_backbone}
    groups: dict[tuple[str, str], GroupScores] = {}
    bad_inputs: BadInputLog | None = None
    if cfg.rule == "fixed":
        pixel = None if cfg.pixel_value is None else float(cfg.pixel_value)
        thresholds = DecisionThresholds("fixed", ClassThreshold(float(cfg.value), pixel), value=float(cfg.value),
                                        source="given by the user", **common)
    else:
        images = _calibration_batches(cfg, module, device)
        groups = score_batches(module, images.batches, device, all_normal=images.all_normal)
        bad_inputs = images.bad_inputs
        classes, fallback = calibrate_groups(groups, str(cfg.rule), cfg.q)
        q = float(cfg.q) if cfg.rule == "normal_quantile" else None
        thresholds = DecisionThresholds(str(cfg.rule), fallback, classes, q=q, source=images.source, **common)
    thresholds.path = thresholds.write(output)
    if random_backbone:
        print("NOTE: random backbone: these thresholds only show that the pipeline works")
    print_thresholds(thresholds)
    if cfg.rule == "normal_quantile" and int(cfg.bootstrap_draws) > 0:
        normals = {key: group.normal_scores for key, group in groups.items()}
        spread = bootstrap_false_rejects(normals, float(cfg.q), int(cfg.bootstrap_draws), int(cfg.bootstrap_seed))
        print_bootstrap(spread, {key: len(scores) for key, scores in normals.items()})
    print(f"thresholds -> {output}")
    if bad_inputs is not None:
        bad_inputs.finish()  # the last line: what was skipped on the way
    return thresholds
