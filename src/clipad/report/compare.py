"""Comparison table of runs: one row per run (or multirun job) with its overrides and summary metrics."""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

import yaml

from clipad.metrics.results import ResultsTable, format_mean_std, format_percent

RESULTS_FILE = "results.csv"
SEED_OVERRIDE = re.compile(r"\s*\b(few_shot_seed|seed)=\S+")


def run_dirs(paths: list[Path]) -> list[Path]:
    """Run dirs among `paths`: a dir with results.csv, or a multirun dir whose job subdirs have one."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory")
        if (path / RESULTS_FILE).is_file():
            found.append(path)
            continue
        jobs = sorted((p.parent for p in path.glob(f"*/{RESULTS_FILE}")),
                      key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        if not jobs:
            raise FileNotFoundError(f"{path}: no {RESULTS_FILE} in it or in its job subdirectories (did the runs finish?)")
        found.extend(jobs)
    return found


def run_overrides(run_dir: Path) -> str:
    """The command-line overrides Hydra recorded for the run (.hydra/overrides.yaml)."""
    file = run_dir / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return ""
    return " ".join(str(o) for o in (yaml.safe_load(file.read_text()) or []))


def summary_columns(table: ResultsTable) -> dict[str, float]:
    """Dataset means, plus the means of domains that hold several datasets."""
    rows = table.rows
    datasets = [r for r in rows if r["level"] == "dataset"]
    # A domain mean over a single dataset repeats that dataset's columns: only list real aggregates.
    per_domain = {d: sum(r["domain"] == d for r in datasets) for d in {r["domain"] for r in datasets}}
    chosen = datasets + [r for r in rows if r["level"] == "domain" and per_domain.get(r["domain"], 0) > 1]
    out = {}
    for row in chosen:
        name = row["dataset"] if row["level"] == "dataset" else f"{row['domain']} (domain)"
        for metric in table.metrics:  # with the sample metrics when the run's rows had views
            out[f"{name}/{metric}"] = row[metric]
    return out


def comparison_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for run_dir in run_dirs(paths):
        table = ResultsTable.from_csv(run_dir / RESULTS_FILE)
        rows.append({"run": str(run_dir), "overrides": run_overrides(run_dir), **summary_columns(table)})
    return rows


def seed_aggregates(rows: list[dict]) -> list[dict]:
    """Mean and std over runs that differ only in their seeds (the few-shot protocol: seeds 10, 20, 30).

    Each aggregate row holds (mean, std) pairs; groups of a single run get none.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(SEED_OVERRIDE.sub("", row["overrides"]).strip(), []).append(row)
    aggregates = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        out: dict = {"run": f"mean ± std over {len(members)} seeds", "overrides": key}
        for column in _columns(members):
            values = [m.get(column) for m in members]
            if all(isinstance(v, float) and not math.isnan(v) for v in values):
                out[column] = (statistics.fmean(values), statistics.stdev(values))
        aggregates.append(out)
    return aggregates


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def _cell(value) -> str:
    if isinstance(value, tuple):
        return format_mean_std(*value)
    if isinstance(value, float):
        return format_percent(value)
    return str(value if value is not None else "-")


def to_markdown(rows: list[dict]) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n\nMetrics in percent; f1max columns are oracle-threshold figures.\n"


def _flat(row: dict) -> dict:
    """CSV cells: fractions as they are, an aggregate's (mean, std) as `<metric>` and `<metric>_std`."""
    out = {}
    for column, value in row.items():
        if isinstance(value, tuple):
            out[column], out[f"{column}_std"] = value
        else:
            out[column] = "" if isinstance(value, float) and math.isnan(value) else value
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    flat = [_flat(row) for row in rows]
    columns = _columns(flat)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(flat)
