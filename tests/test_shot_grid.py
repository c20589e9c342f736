"""The shot-grid summary (results_shots.md): mean ± std over prompt draws of the tables' own columns."""
from __future__ import annotations

import math
import statistics

from clipad.cli.shot_grid import GridPoint, write_grid
from clipad.metrics.results import METRIC_NAMES, MULTI_VIEW, SAMPLE_METRICS, THRESHOLD_FREE, ResultsTable


def table(layout, offset: float) -> ResultsTable:
    """Two classes; metric i of class c is 0.5 + 0.01 * i + 0.1 * c + offset; pixel_aupro missing."""
    rows = []
    for c, name in enumerate(("audiojack", "bottle_cap")):
        values = {m: 0.5 + 0.01 * i + 0.1 * c + offset for i, m in enumerate(layout.metrics)}
        rows.append({"dataset": "realiad", "domain": "industrial", "class": name, **values, "pixel_aupro": math.nan})
    return ResultsTable(rows, layout)


def summary_rows(summary: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in summary.splitlines() if line.startswith("|")]


def test_summary_lists_the_sample_metrics_of_multi_view_runs(tmp_path):
    offsets = {10: 0.0, 20: 0.04}
    grid = [GridPoint(0, 10, table(MULTI_VIEW, 0.02), [])]
    grid += [GridPoint(1, seed, table(MULTI_VIEW, offset), []) for seed, offset in offsets.items()]
    summary = write_grid(grid, tmp_path)
    assert (tmp_path / "results_shots.md").read_text() == summary
    header, _, zero_shot, one_shot = summary_rows(summary)
    assert header == ["shots", "draws", *MULTI_VIEW.metrics]
    assert header[5:8] == list(SAMPLE_METRICS)  # after the image metrics, before the pixel ones, as in results.csv
    for column, metric in enumerate(MULTI_VIEW.metrics, start=2):
        i = MULTI_VIEW.metrics.index(metric)
        if metric == "pixel_aupro":
            assert zero_shot[column] == one_shot[column] == "-"
            continue
        class_mean = 0.5 + 0.01 * i + 0.05  # the mean of the two classes, before the draw's offset
        assert zero_shot[column] == f"{100 * (class_mean + 0.02):.1f}"
        draws = [class_mean + offset for offset in offsets.values()]
        expected = f"{100 * statistics.fmean(draws):.1f} ± {100 * statistics.stdev(draws):.1f}"
        assert one_shot[column] == expected, metric
    assert zero_shot[:2] == ["0", "1"] and one_shot[:2] == ["1", "2"]


def test_summary_of_single_view_runs_keeps_the_image_and_pixel_metrics_only(tmp_path):
    grid = [GridPoint(1, seed, table(THRESHOLD_FREE, 0.01 * seed), []) for seed in (1, 2)]
    header = summary_rows(write_grid(grid, tmp_path))[0]
    assert header == ["shots", "draws", *METRIC_NAMES]
