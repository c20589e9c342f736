"""Evaluating one trained model at several shot counts and prompt draws (AdaptCLIP's protocol).

`shots=0,1,2,4` (a list, no multirun) trains once and tests at every k; `few_shot_seeds=[10,20,30]`
draws the k normal prompt images three times, and the summary gives mean ± std over the draws.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from omegaconf import DictConfig, ListConfig, open_dict

from clipad.errors import ConfigError

if TYPE_CHECKING:  # the config checks call shot_grid before torch and lightning are imported
    import lightning as L

    from clipad.metrics.results import ResultsTable
    from clipad.report.image_scores import ImageScore


class GridPoint(NamedTuple):
    """The test results at one (shots, prompt seed) point."""

    shots: int
    seed: int
    table: ResultsTable
    image_scores: list[ImageScore]


def shot_grid(cfg: DictConfig) -> list[tuple[int, int]]:
    """(shots, prompt seed) pairs to test; zero-shot needs no prompt draw, so it is tested once."""
    shots = list(cfg.shots) if isinstance(cfg.shots, (list, ListConfig)) else [cfg.shots]
    seeds = list(cfg.get("few_shot_seeds") or [cfg.few_shot_seed])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*shots, *seeds]):
        raise ConfigError(f"shots={cfg.shots} few_shot_seeds={seeds}: shot counts and seeds must be integers")
    grid = [(int(k), int(seed)) for k in shots for seed in (seeds if int(k) > 0 else seeds[:1])]
    if any(k < 0 for k, _ in grid):
        raise ConfigError(f"shots={cfg.shots}: every value must be 0 (zero-shot) or a positive number of images")
    return grid


def use_first_point(cfg: DictConfig, grid: list[tuple[int, int]]) -> None:
    """Models and data are built for one point of the grid; the others are set before each test."""
    with open_dict(cfg):
        cfg.shots, cfg.few_shot_seed = grid[0]


def check_model_supports(module: L.LightningModule, grid: list[tuple[int, int]]) -> None:
    if any(k > 0 for k, _ in grid) and not hasattr(module, "shots"):
        raise ConfigError(f"model {module.cfg.model.name} is zero-shot only: use shots=0 "
                          "(few-shot: model=adaptclip or model=winclip)")


def set_point(module: L.LightningModule, datamodule, shots: int, seed: int) -> None:
    if hasattr(module, "shots"):
        module.shots, module.few_shot_seed = shots, seed
    datamodule.set_few_shot(shots, seed)


def run_grid(trainer: L.Trainer, module, datamodule, grid: list[tuple[int, int]], ckpt_path: str | None
              ) -> list[GridPoint]:
    results = []
    for shots, seed in grid:
        set_point(module, datamodule, shots, seed)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        results.append(GridPoint(shots, seed, module.stage_results["test"], module.stage_image_scores["test"]))
    return results


def write_grid(results: list[GridPoint], output_dir: Path) -> str:
    """Per point: results_shots{k}_seed{s}.csv; returns (and writes) the mean ± std summary table, with the
    columns of the tables (the sample metrics S-* after the image ones when the test rows have views)."""
    from clipad.metrics.results import format_mean_std, format_percent  # clipad.metrics loads torch

    for point in results:
        point.table.to_csv(output_dir / f"results_shots{point.shots}_seed{point.seed}.csv")
    metrics = list(dict.fromkeys(m for p in results for m in p.table.metrics))
    lines = ["| shots | draws | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for shots in dict.fromkeys(p.shots for p in results):
        means = [p.table.class_means() for p in results if p.shots == shots]
        cells = []
        for metric in metrics:
            values = [m[metric] for m in means if not math.isnan(m.get(metric, math.nan))]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(format_percent(values[0]))
            else:
                cells.append(format_mean_std(statistics.fmean(values), statistics.stdev(values)))
        lines.append(f"| {shots} | {len(means)} | " + " | ".join(cells) + " |")
    summary = "Mean over the target classes, percent (± std over prompt draws):\n\n" + "\n".join(lines) + "\n"
    (output_dir / "results_shots.md").write_text(summary)
    return summary
