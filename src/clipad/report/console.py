"""What a finished run prints: the results table, where files went, and the demo's before/after view."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from clipad.metrics.results import format_percent


def print_results(results, cfg: DictConfig, output_dir: Path, random_backbone: bool,
                  section_csvs: Sequence[Path] = ()) -> None:
    print()
    if random_backbone:
        print(f"NOTE: backbone {cfg.backbone.name} has RANDOM weights (no pretrained CLIP): these numbers only "
              "show that the pipeline works; they are not comparable with the papers.")
    print(results.to_markdown())
    print(f"Results: {output_dir / 'results.md'} and {output_dir / 'results.csv'}"
          + "".join(f", {path}" for path in section_csvs))
    heatmaps = output_dir / "heatmaps"
    if heatmaps.is_dir():
        print(f"Heatmaps: {heatmaps}")


def print_trained_vs_untrained(untrained, trained, metric: str = "pixel_auroc") -> None:
    """Per class of the targets (never seen in training): the metric before and after training."""
    before = {(r["dataset"], r["class"]): r.get(metric) for r in untrained.class_rows()}
    print(f"\nUnseen classes, {metric.replace('_', ' ')} (%): untrained vs trained model")
    print("| dataset | class | untrained | trained |")
    print("|---|---|---|---|")
    for row in trained.class_rows():
        key = (row["dataset"], row["class"])
        print(f"| {key[0]} | {key[1]} | {format_percent(before.get(key))} | {format_percent(row.get(metric))} |")
    mean_before = untrained.class_means().get(metric)
    mean_after = trained.class_means().get(metric)
    print(f"| mean | | {format_percent(mean_before)} | {format_percent(mean_after)} |")
