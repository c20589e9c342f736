"""What `predict` writes per image: a scores.csv row, a figure, and optionally the anomaly maps and a binary mask.

Output files mirror the input's folder structure under the output folder and keep the input's file name,
suffix included (`a/b.jpg` -> `figures/a/b.jpg.png`, `b.jpg.smoothed.npy`, `b.jpg.raw.npy`, `b.jpg.mask.png`),
so that `b.png` and `b.jpg` in one folder never overwrite each other.

Per-dataset colour scaling needs the range of all maps before the first figure is drawn: the maps are then
kept on disk (float16, figure size) while predicting, and the figures drawn at the end, re-reading each image.
Figures are drawn in worker processes: matplotlib needs about 0.25 s per figure, more than a model forward.
"""
from __future__ import annotations

import csv
import multiprocessing
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipad.calibration.thresholds import decision as calibrated_decision
from clipad.cli.predict_inputs import PREVIEW_SIZE, preview_of
from clipad.cli.predict_submission import SubmissionTarget
from clipad.data.image_io import read_rgb
from clipad.errors import ClipadError, ConfigError
from clipad.metrics.evaluator import quantize_maps, threshold_to_level
from clipad.report.heatmaps import SCALINGS, save_prediction_figure
from clipad.report.mvtec_ad2_submission import write_submission_maps

# save_maps values -> the maps written. smoothed: the map scored, figured and thresholded (gaussian-smoothed),
# resized to the input file's size; raw: the model's map before smoothing, at the model's input resolution.
SAVE_MAPS = {"false": (), "smoothed": ("smoothed",), "raw": ("raw",), "both": ("smoothed", "raw")}


def saved_map_kinds(value: object) -> tuple[str, ...]:
    """The maps `save_maps` asks for; true is refused because it has meant both in the past (docs: raw, code:
    smoothed)."""
    if value is True:
        raise ClipadError(
            "save_maps=true is ambiguous: say which map to write. save_maps=smoothed writes <name>.smoothed.npy, "
            "the smoothed map at the input image's size (what save_maps=true wrote before); save_maps=raw writes "
            "<name>.raw.npy, the map before smoothing at the model's input size; save_maps=both writes the two."
        )
    key = "false" if value in (False, None) else str(value)
    if key not in SAVE_MAPS:
        raise ClipadError(f"save_maps={value}: choose one of {' | '.join(SAVE_MAPS)} (conf/predict.yaml)")
    return SAVE_MAPS[key]


@dataclass(frozen=True)
class OutputOptions:
    threshold: float | None  # image decision: score >= threshold -> anomalous
    pixel_threshold: float | None  # binary mask: map >= pixel_threshold
    save_figures: bool
    save_masks: bool
    save_maps: tuple[str, ...]  # "smoothed" and/or "raw" (saved_map_kinds)
    scaling: str
    # thresholds from a calibrated file: scores.csv says pass/fail, masks compare 16-bit levels as evaluation does
    calibrated: bool = False
    # calibrated pixel thresholds are in the units the metrics see, map / map_scale (the model's map_upper_bound:
    # 4/3 for few-shot AdaptCLIP with the reference's unclamped align distance, 1 otherwise)
    map_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ConfigError(f"scaling={self.scaling!r}: choose one of {', '.join(SCALINGS)}")
        if self.save_masks and self.pixel_threshold is None:
            raise ConfigError("save_masks=true needs a threshold: set pixel_threshold=... (or threshold=...)")

    def mask_of(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Defect pixels (bool) of a map at pixel_threshold."""
        if self.calibrated:
            return quantize_maps(anomaly_map / self.map_scale) >= threshold_to_level(self.pixel_threshold)
        return anomaly_map >= self.pixel_threshold


def resized_map(anomaly_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[S, S] map -> [H, W] float32 at another resolution (bilinear; values stay within the map's range)."""
    if tuple(anomaly_map.shape) == tuple(size):
        return anomaly_map.float().cpu().numpy()
    resized = F.interpolate(anomaly_map[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0, 0].cpu().numpy()


class FigureDrawer:
    """save_prediction_figure in `workers` processes (0: in this one), at most 2 per worker waiting at a time."""

    def __init__(self, workers: int) -> None:
        # fork: the workers only run matplotlib, and start without re-importing torch.
        context = multiprocessing.get_context("fork")
        self._pool = ProcessPoolExecutor(workers, mp_context=context) if workers > 0 else None
        self._waiting: deque[Future] = deque()
        self._limit = 2 * workers

    def draw(self, *args) -> None:
        if self._pool is None:
            save_prediction_figure(*args)
            return
        self._waiting.append(self._pool.submit(save_prediction_figure, *args))
        while len(self._waiting) > self._limit:
            self._waiting.popleft().result()  # re-raises a worker's error

    def close(self) -> None:
        try:
            while self._waiting:
                self._waiting.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)


class PredictionWriter:
    def __init__(
        self, output_dir: Path, input_root: Path, options: OutputOptions, title_note: str = "", figure_workers: int = 0,
        submission: SubmissionTarget | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.submission = submission
        self.submitted = 0  # images with their submission files
        self.input_root = input_root.resolve()
        self.options = options
        self.title_note = title_note
        output_dir.mkdir(parents=True, exist_ok=True)
        self.scores_path = output_dir / "scores.csv"
        self._scores_file = self.scores_path.open("w", newline="")
        self._scores = csv.writer(self._scores_file)
        decision_column = ["decision"] if options.calibrated else ["anomalous"]
        self._scores.writerow(["path", "score"] + (decision_column if options.threshold is not None else []))
        self.unreadable_path = output_dir / "unreadable.csv"
        self.unreadable: list[tuple[str, str]] = []
        self.count = 0
        self.fails = 0  # images at or above the image threshold
        self.figures: list[Path] = []
        self._low, self._high = float("inf"), float("-inf")
        defer = options.save_figures and options.scaling == "per_dataset"
        self._pending_dir = Path(tempfile.mkdtemp(prefix=".pending_figures_", dir=output_dir)) if defer else None
        self._pending: list[tuple[str, Path, str]] = []  # (image path, stored map, title)
        self._drawer = FigureDrawer(figure_workers) if options.save_figures else None

    def output_stem(self, path: str) -> Path:
        """output_dir/figures/<path below the input root>, suffix kept in the name."""
        resolved = Path(path).resolve()
        relative = resolved.relative_to(self.input_root) if resolved.is_relative_to(self.input_root) else Path(resolved.name)
        return self.output_dir / "figures" / relative

    def title(self, path: str, score: float) -> str:
        decision = ""
        if self.options.threshold is not None:
            if self.options.calibrated:
                decision = f" -> {calibrated_decision(score, self.options.threshold)}"
            else:
                decision = " -> anomalous" if score >= self.options.threshold else " -> normal"
        return f"{Path(path).name}  score {score:.4g}{decision}{self.title_note}"

    def write(self, path: str, score: float, anomaly_map: torch.Tensor, size: tuple[int, int],
              preview: np.ndarray | None, raw_map: torch.Tensor | None = None) -> None:
        """One image's outputs; anomaly_map [S, S] (smoothed) and raw_map [S, S] (before smoothing, needed for
        save_maps=raw) on any device; size (height, width) of the input file."""
        options = self.options
        row = [path, f"{score:.6g}"]
        if options.threshold is not None:
            fail = score >= options.threshold
            self.fails += int(fail)
            row.append(calibrated_decision(score, options.threshold) if options.calibrated else int(fail))
        self._scores.writerow(row)
        self.count += 1
        self._low = min(self._low, float(anomaly_map.min()))
        self._high = max(self._high, float(anomaly_map.max()))
        stem = self.output_stem(path)
        if "raw" in options.save_maps:
            if raw_map is None:
                raise ClipadError("save_maps=raw: this model gives no map before smoothing; use save_maps=smoothed")
            stem.parent.mkdir(parents=True, exist_ok=True)
            np.save(stem.with_name(stem.name + ".raw.npy"), raw_map.float().cpu().numpy())
        if "smoothed" in options.save_maps or options.save_masks or self.submission is not None:
            full = resized_map(anomaly_map, size)
            if "smoothed" in options.save_maps:
                stem.parent.mkdir(parents=True, exist_ok=True)
                np.save(stem.with_name(stem.name + ".smoothed.npy"), full.astype(np.float32))
            wanted = options.save_masks or self.submission is not None  # save_masks implies a pixel threshold
            defects = options.mask_of(full) if wanted and options.pixel_threshold is not None else None
            if options.save_masks:
                stem.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.where(defects, 255, 0).astype(np.uint8), mode="L").save(
                    stem.with_name(stem.name + ".mask.png"))
            if self.submission is not None:
                write_submission_maps(self.submission.folder, Path(path), self.submission.dataset_root, full, defects)
                self.submitted += 1
        if not options.save_figures:
            return
        if self._pending_dir is None:
            self._draw(stem, preview, resized_map(anomaly_map, preview.shape[:2]), self.title(path, score), None)
        else:  # kept small: at most the figure's size, float16
            side = min(PREVIEW_SIZE, max(anomaly_map.shape))
            stored = self._pending_dir / f"{self.count}.npy"
            np.save(stored, resized_map(anomaly_map, (side, side)).astype(np.float16))
            self._pending.append((path, stored, self.title(path, score)))

    @property
    def needs_previews(self) -> bool:
        """Whether write() wants each image's preview now (deferred figures re-read their image instead)."""
        return self.options.save_figures and self._pending_dir is None

    def skip(self, path: str, reason: str) -> None:
        self.unreadable.append((path, reason))

    def _draw(self, stem: Path, preview: np.ndarray, shown: np.ndarray, title: str,
              dataset_range: tuple[float, float] | None) -> None:
        figure = stem.with_name(stem.name + ".png")
        self._drawer.draw(figure, preview, shown, title, self.options.scaling, dataset_range)
        self.figures.append(figure)

    def pending_figures(self) -> int:
        return len(self._pending)

    def draw_pending(self, progress=None) -> None:
        """Draw the deferred per-dataset figures with the colour range of all maps."""
        dataset_range = (self._low, self._high)
        for path, stored, title in self._pending:
            preview = preview_of(read_rgb(path))
            shown = resized_map(torch.from_numpy(np.load(stored)), preview.shape[:2])
            self._draw(self.output_stem(path), preview, shown, title, dataset_range)
            stored.unlink()
            if progress is not None:
                progress.update(1)
        self._pending.clear()

    def close(self) -> None:
        """Finish the figures, close scores.csv, remove scratch files, list the unreadable files."""
        self._scores_file.close()
        try:
            if self._drawer is not None:
                self._drawer.close()
        finally:
            if self._pending_dir is not None:
                shutil.rmtree(self._pending_dir, ignore_errors=True)
        if self.unreadable:
            with self.unreadable_path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "reason"])
                writer.writerows(self.unreadable)
