"""`python -m clipad.predict ckpt_path=... input=FOLDER|GLOB|FILE`: score images with a trained model.

Writes <output_dir>/scores.csv (path, score and, with threshold= or a thresholds file, the decision), one figure per image
(image | anomaly map with colour bar | overlay) and optionally the raw maps (.npy) and binary masks. Images
stream through a DataLoader in batches: any number of them, never all in memory. Unreadable files are named,
skipped and listed in unreadable.csv; they and the files of mask folders (not scored) are counted in bad_inputs.csv.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from clipad.calibration.thresholds import GLOBAL, ClassThreshold, read_thresholds
from clipad.cli.checkpoint import module_from_checkpoint
from clipad.cli.hydra_setup import command_line_overrides
from clipad.cli.predict_inputs import (
    FolderPrompts,
    ImageFileDataset,
    LoadedImages,
    collate_images,
    list_input_images,
)
from clipad.cli.predict_outputs import OutputOptions, PredictionWriter, saved_map_kinds
from clipad.data.bad_inputs import BadInput, BadInputLog
from clipad.data.batch import Batch
from clipad.data.transforms import SampleTransform
from clipad.errors import ClipadError, ConfigError
from clipad.models.base import AnomalyModule

log = logging.getLogger(__name__)
PREDICT_DATASET = "predict"  # dataset name of every image (few-shot prompts are requested under it)


@dataclass
class PredictionSummary:
    output_dir: Path
    scores_path: Path
    scored: int
    unreadable: list[tuple[str, str]]  # (path, reason)
    figures: list[Path]
    mask_files: list[tuple[Path, str]]  # files of mask folders not scored: (path, reason)
    bad_inputs: BadInputLog
    fails: int | None = None  # with a thresholds file: images decided "fail"


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_module(cfg: DictConfig, overrides: list[str], device: str) -> AnomalyModule:
    """The checkpoint's model on `device`, in eval mode (a random backbone is redrawn from its own seed)."""
    return module_from_checkpoint(cfg.ckpt_path, cfg, overrides, device=device).to(device).eval()


def model_input(module: AnomalyModule) -> SampleTransform:
    """The data pipeline's resize (Pillow bicubic) and the backbone's normalisation."""
    cfg = module.cfg.backbone
    return SampleTransform(module.backbone.image_size, list(cfg.mean), list(cfg.std))


def attach_normal_prompts(module: AnomalyModule, cfg: DictConfig, transform: SampleTransform) -> None:
    """Few-shot models get shots_dir's images as normal prompts; without shots_dir they run zero-shot."""
    few_shot = hasattr(module, "prompt_source")
    if cfg.get("shots_dir"):
        if not few_shot:
            raise ConfigError(
                f"shots_dir is for few-shot models (model=adaptclip, winclip); model={module.cfg.model.name} takes no "
                "normal prompt images: leave shots_dir out"
            )
        prompts = FolderPrompts(cfg.shots_dir, transform, cfg.get("shots"))
        module.prompt_source = prompts
        module.shots = prompts.shots
        log.info("few-shot: %d normal prompt images from %s", prompts.shots, cfg.shots_dir)
    elif few_shot:
        module.shots = 0


def batch_of(loaded: LoadedImages, class_name: str, device: str) -> Batch:
    images = loaded.images.to(device)
    count = images.shape[0]
    return Batch(
        image=images,
        mask=images.new_zeros(count, 1, *images.shape[-2:]),
        has_mask=torch.zeros(count, dtype=torch.bool, device=device),
        label=torch.zeros(count, dtype=torch.long, device=device),
        cls_name=[class_name] * count,
        prompt_name=[class_name] * count,
        dataset=[PREDICT_DATASET] * count,
        path=loaded.paths,
    )


def calibrated_threshold(cfg: DictConfig) -> tuple[ClassThreshold, str] | None:
    """The thresholds file's entry for this run's class (threshold_class, else class_name), or its global one."""
    if not cfg.get("thresholds"):
        return None
    if cfg.threshold is not None:
        raise ClipadError("give either threshold=... or thresholds=FILE, not both")
    thresholds = read_thresholds(cfg.thresholds)
    name = str(cfg.get("threshold_class") or cfg.class_name)
    chosen, key = thresholds.lookup(PREDICT_DATASET, name)
    if key == GLOBAL:
        chosen, key = thresholds.lookup_class(name)
    return chosen, f"{key} ({thresholds.describe()})"


def output_options(cfg: DictConfig) -> tuple[OutputOptions, str | None]:
    """What to write per image, and where a calibrated threshold came from (None: none used)."""
    calibrated = calibrated_threshold(cfg)
    threshold, pixel_threshold = cfg.threshold, cfg.pixel_threshold
    if calibrated is not None:
        threshold, pixel_threshold = calibrated[0].image, calibrated[0].pixel
        if cfg.save_masks and pixel_threshold is None:
            raise ClipadError(f"save_masks=true: thresholds={cfg.thresholds} holds no pixel threshold for "
                              f"{calibrated[1]}; calibrate with pixel maps or leave save_masks out")
    options = OutputOptions(
        threshold=threshold,
        pixel_threshold=pixel_threshold,
        save_figures=bool(cfg.save_figures),
        save_masks=bool(cfg.save_masks),
        save_maps=saved_map_kinds(cfg.save_maps),
        scaling=cfg.scaling,
        calibrated=calibrated is not None,
    )
    return options, None if calibrated is None else calibrated[1]


def predict(cfg: DictConfig, overrides: list[str] | None = None) -> PredictionSummary:
    # options and input are checked before the model loads: mistakes fail in a second
    options, threshold_source = output_options(cfg)
    if threshold_source:
        print(f"thresholds: {threshold_source}; image {options.threshold:.6g}, pixel "
              + ("-" if options.pixel_threshold is None else f"{options.pixel_threshold:.6g}"))
    output_dir = Path(cfg.output_dir)
    listing = list_input_images(str(cfg.input), exclude=output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bad_inputs = BadInputLog(output_dir)
    bad_inputs.record(BadInput("mask_file_skipped", str(path), PREDICT_DATASET, "", reason)
                      for path, reason in listing.skipped)
    device = resolve_device(cfg.device)
    module = load_module(cfg, command_line_overrides() if overrides is None else overrides, device)
    transform = model_input(module)
    attach_normal_prompts(module, cfg, transform)
    options = dataclasses.replace(options, map_scale=module.map_upper_bound)
    random_note = "  [random backbone]" if module.backbone.is_random else ""
    writer = PredictionWriter(output_dir, listing.root, options, title_note=random_note,
                              figure_workers=int(cfg.num_workers))
    dataset = ImageFileDataset(listing.paths, transform, previews=writer.needs_previews)
    loader = DataLoader(
        dataset, batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers), collate_fn=collate_images,
        pin_memory=device.startswith("cuda"),
    )
    try:
        with logging_redirect_tqdm(), torch.no_grad(), tqdm(total=len(dataset), unit="img", desc="predict") as bar:
            for loaded in loader:
                for path, reason in loaded.unreadable:
                    log.warning("skipped unreadable image %s: %s", path, reason)
                    writer.skip(path, reason)
                    bad_inputs.record([BadInput("unreadable", path, PREDICT_DATASET, "", reason)])
                if loaded.images is not None:
                    output = module(batch_of(loaded, str(cfg.class_name), device))
                    for i, path in enumerate(loaded.paths):
                        raw = None if output.raw_map is None else output.raw_map[i]
                        writer.write(path, float(output.score[i]), output.anomaly_map[i], loaded.sizes[i],
                                     loaded.previews[i], raw)
                bar.update(len(loaded.paths) + len(loaded.unreadable))
        if writer.pending_figures():
            with logging_redirect_tqdm(), tqdm(total=writer.pending_figures(), unit="fig", desc="figures") as bar:
                writer.draw_pending(bar)
    finally:
        writer.close()  # waits for the last figures
    fails = writer.fails if options.calibrated else None
    summary = PredictionSummary(output_dir, writer.scores_path, writer.count, writer.unreadable, writer.figures,
                                listing.skipped, bad_inputs, fails)
    print_summary(summary, random_backbone=module.backbone.is_random)
    return summary


def print_summary(summary: PredictionSummary, random_backbone: bool) -> None:
    print(f"scored {summary.scored} images -> {summary.scores_path}")
    if summary.fails is not None:
        print(f"{summary.scored} images: {summary.fails} fail, {summary.scored - summary.fails} pass")
    if summary.figures:
        print(f"{len(summary.figures)} figures in {summary.output_dir / 'figures'}")
    if summary.unreadable:
        names = ", ".join(path for path, _ in summary.unreadable[:5]) + (" ..." if len(summary.unreadable) > 5 else "")
        print(f"skipped {len(summary.unreadable)} unreadable files ({names}); listed in "
              f"{summary.output_dir / 'unreadable.csv'}")
    if summary.mask_files:
        folders = Counter(reason for _, reason in summary.mask_files)
        print(f"not scored: {len(summary.mask_files)} mask files of dataset layouts ("
              + ", ".join(f"{count} {reason}" for reason, count in folders.items()) + ")")
    if random_backbone:
        print("random backbone: these scores say nothing about the method")
    summary.bad_inputs.finish()

