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


# ---------------------------------------------------------------- methods side by side (the papers' layout)
METRIC_GROUPS = {  # one cell per (dataset, group): the values in this order, as the papers' tables pair them
    "image AUROC, AP, F1max": ("image_auroc", "image_ap", "image_f1max"),
    "pixel AUROC, AP, F1max, AUPRO": ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"),
}
MODEL_OVERRIDE = re.compile(r"^model=(\S+)$")


def run_config(run_dir: Path) -> dict:
    """The resolved config clipad wrote into the run dir (config.yaml), or Hydra's copy; {} when neither."""
    for file in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if file.is_file():
            return yaml.safe_load(file.read_text()) or {}
    return {}


def run_method(run_dir: Path) -> str | None:
    """model.name of the run (its config), else a `model=X` override, else None."""
    name = (run_config(run_dir).get("model") or {}).get("name")
    if name:
        return str(name)
    matches = [MODEL_OVERRIDE.match(o) for o in run_overrides(run_dir).split()]
    return next((m.group(1) for m in matches if m), None)


def random_backbone(run_dir: Path) -> bool:
    backbone = run_config(run_dir).get("backbone") or {}
    return bool(backbone) and not backbone.get("pretrained") and not backbone.get("checkpoint")


def method_columns(dirs: list[Path]) -> dict[str, Path]:
    """Column label -> run dir, one per run; runs of the same method are told apart by their other overrides."""
    methods = [(run_method(d) or d.name, d) for d in dirs]
    counts = {m: sum(m == other for other, _ in methods) for m, _ in methods}
    columns: dict[str, Path] = {}
    for method, run_dir in methods:
        label = method
        if counts[method] > 1:
            rest = " ".join(o for o in run_overrides(run_dir).split() if not MODEL_OVERRIDE.match(o))
            label = f"{method} ({rest or run_dir.name})"
        while label in columns:
            label = f"{label} [{run_dir.name}]"
        columns[label] = run_dir
    return columns


def method_table(paths: list[Path]) -> str | None:
    """Markdown: one row per (dataset, metric group), one column per method; None unless several methods ran.

    Datasets (and domains of several datasets) in first-seen order; a method without a dataset shows "-".
    """
    dirs = run_dirs(paths)
    if len({run_method(d) for d in dirs}) < 2:
        return None
    columns = method_columns(dirs)
    summaries = {label: summary_columns(ResultsTable.from_csv(d / RESULTS_FILE)) for label, d in columns.items()}
    datasets = list(dict.fromkeys(key.rsplit("/", 1)[0] for summary in summaries.values() for key in summary))
    lines = ["| dataset | metrics | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for dataset in datasets:
        for group, metrics in METRIC_GROUPS.items():
            cells = []
            for summary in summaries.values():
                values = [summary.get(f"{dataset}/{metric}") for metric in metrics]
                cells.append("-" if all(v is None for v in values) else ", ".join(_cell(v) for v in values))
            lines.append(f"| {dataset} | {group} | " + " | ".join(cells) + " |")
    notes = ["Methods side by side, metrics in percent (mean over classes); F1max is an oracle-threshold figure."]
    random = [label for label, d in columns.items() if random_backbone(d)]
    if random:
        notes.append(f"Random backbone in {', '.join(random)}: these numbers say nothing about the methods.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
