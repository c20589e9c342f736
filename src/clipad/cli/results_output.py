"""What train.py and evaluate.py do with test results: files, console, loggers, the sweep's value."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from clipad.cli.shot_grid import GridPoint, write_grid
from clipad.metrics.results import ResultsTable
from clipad.report.console import print_results
from clipad.report.image_scores import write_image_scores
from clipad.tracking import log_results


def report_results(
    cfg: DictConfig,
    trainer: L.Trainer,
    random_backbone: bool,
    loggers: list[Logger],
    grid_results: list[GridPoint],
    output_dir: Path,
) -> ResultsTable:
    """Write results.md/csv and image_scores.csv (the first shot/seed point) and the shot summary; print; log.
    Rank 0 only."""
    shots, seed, results, image_scores = grid_results[0]
    if trainer.is_global_zero:
        results.to_csv(output_dir / "results.csv")
        write_image_scores(image_scores, output_dir / "image_scores.csv")
        section_csvs = results.write_section_csvs(output_dir)  # results_inspection.csv, results_decisions.csv
        (output_dir / "results.md").write_text(results.to_markdown())
        print_results(results, cfg, output_dir, random_backbone=random_backbone, section_csvs=section_csvs)
        if len(grid_results) > 1:
            print(f"\nresults.csv is shots={shots}, seed {seed}. " + write_grid(grid_results, output_dir))
        log_results(loggers, results)
    return results


def sweep_value(results: ResultsTable) -> float | None:
    """What train()/evaluate() return for sweepers: mean pixel AUROC over the target classes."""
    value = results.class_means().get("pixel_auroc")
    return None if value is None or value != value else float(value)  # NaN: no pixel labels
