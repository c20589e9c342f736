"""`python -m clipad.predict ckpt_path=... input=FOLDER|GLOB|FILE`: score images with a trained model.

Writes <output_dir>/scores.csv (path, score and, with threshold= or a thresholds file, the decision), one figure per image
(image | anomaly map with colour bar | overlay) and optionally the raw maps (.npy) and binary masks. Images
stream through a DataLoader in batches: any number of them, never all in memory. Unreadable files are named,
skipped and listed in unreadable.csv; they and the files of mask folders (not scored) are counted in bad_inputs.csv.
submission=mvtec_ad2 also writes the MVTec AD 2 evaluation server's folder, <output_dir>/submission.
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

from clipad.cli.hydra_setup import command_line_overrides
from clipad.cli.inference import (
    PREDICT_DATASET,
    attach_normal_prompts,
    batch_of,
    calibrated_threshold,
    load_module,
    model_input,
    resolve_device,
)
from clipad.cli.predict_inputs import ImageFileDataset, collate_images, list_input_images
from clipad.cli.predict_outputs import OutputOptions, PredictionWriter, saved_map_kinds
from clipad.cli.predict_submission import SubmissionTarget, submission_target
from clipad.data.bad_inputs import BadInput, BadInputLog
from clipad.errors import ClipadError
from clipad.report.mvtec_ad2_submission import CONTINUOUS_DIR, THRESHOLDED_DIR

log = logging.getLogger(__name__)


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
    submission: SubmissionTarget | None = None  # submission=mvtec_ad2: the evaluation server's folder
    submitted: int = 0  # images with their submission files
    pixel_threshold: float | None = None  # the threshold of the submission's PNGs (None: none written)


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
    submission = submission_target(cfg, output_dir, listing.paths)
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
                              figure_workers=int(cfg.num_workers), submission=submission)
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
                                listing.skipped, bad_inputs, fails, submission, writer.submitted,
                                options.pixel_threshold)
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
    if summary.submission is not None:
        print_submission(summary)


def print_submission(summary: PredictionSummary) -> None:
    """Last lines: where the evaluation server's folder is and what it holds."""
    folder = summary.submission.folder
    print(f"MVTec AD 2 submission: {summary.submitted} continuous maps (float16 .tiff) in {folder / CONTINUOUS_DIR}")
    if summary.pixel_threshold is None:
        print(f"no pixel threshold: only the .tiff files; {THRESHOLDED_DIR}/ needs pixel_threshold=... or thresholds=FILE")
    else:
        print(f"MVTec AD 2 submission: {summary.submitted} thresholded maps (.png at pixel threshold "
              f"{summary.pixel_threshold:.6g}) in {folder / THRESHOLDED_DIR}")
    print(f"check {folder} with MVTec's check_and_prepare_data_for_upload.py before uploading")

