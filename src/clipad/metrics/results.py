"""The results table: one row per class, then per-dataset means, then per-domain means.

Values are fractions in [0, 1] (NaN = missing) everywhere except ``to_markdown``, which prints percent
with one decimal as the papers do. Means skip missing values: a dataset mean is over its classes, a
domain mean over its datasets' means (so a large dataset does not outweigh a small one).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

METRIC_NAMES = (
    "image_auroc",
    "image_ap",
    "image_f1max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1max",
    "pixel_aupro",
)
ORACLE_METRICS = ("image_f1max", "sample_f1max", "pixel_f1max")
# Multi-view datasets (Real-IAD): a sample's score is the max of its views' image scores, its label the max of
# their labels (the AdaptCLIP reference's S-* metrics). Shown after the image metrics when the test rows have views.
SAMPLE_METRICS = ("sample_auroc", "sample_ap", "sample_f1max")
KEY_COLUMNS = ("level", "domain", "dataset", "class")
MEAN = "mean"  # the class (and, for domain rows, dataset) entry of a mean row

_HEADERS = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "image_f1max": "Image F1-max†",
    "sample_auroc": "Sample AUROC",
    "sample_ap": "Sample AP",
    "sample_f1max": "Sample F1-max†",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "pixel_f1max": "Pixel F1-max†",
    "pixel_aupro": "Pixel AUPRO",
}
ORACLE_FOOTNOTE = (
    "† F1-max is an oracle-threshold figure: the best F1 over all thresholds, chosen on the test "
    "labels themselves; no threshold fixed in advance is known to reach it."
)


@dataclass(frozen=True)
class TableLayout:
    """Which metrics a table holds, their column headers, and the text printed above and below it."""

    metrics: tuple[str, ...]
    headers: Mapping[str, str]
    footnote: str = ""
    title: str = ""


THRESHOLD_FREE = TableLayout(METRIC_NAMES, _HEADERS, ORACLE_FOOTNOTE)
MULTI_VIEW = TableLayout(
    (*METRIC_NAMES[:3], *SAMPLE_METRICS, *METRIC_NAMES[3:]),
    _HEADERS,
    ORACLE_FOOTNOTE + " Sample metrics: one score per physical sample, the max over its camera views' image "
    "scores (label: the max of their labels); \"-\" for datasets without views.",
)


def layout_of_columns(columns: Sequence[str]) -> TableLayout:
    """The threshold-free layout a results CSV with these columns was written with."""
    return MULTI_VIEW if SAMPLE_METRICS[0] in columns else THRESHOLD_FREE


def format_percent(value: float | None) -> str:
    """A fraction as the tables print it: percent with one decimal, "-" when missing."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_mean_std(mean: float, std: float) -> str:
    """Mean ± std over repeated runs (e.g. few-shot prompt draws), in percent."""
    return f"{format_percent(mean)} ± {format_percent(std)}"


def _mean(values: Iterable[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return math.fsum(present) / len(present) if present else math.nan


def _first_seen(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class ResultsTable:
    """Rows of metrics. Build it from class rows; the mean rows are derived.

    ``class_rows``: dicts with keys ``dataset``, ``domain``, ``class`` and every metric of ``layout``
    (float, NaN when missing), in the order they should be shown. ``sections``: further tables of the
    same run (e.g. "inspection", "decisions") shown after this one; each is written to its own CSV.
    """

    def __init__(
        self,
        class_rows: Sequence[dict],
        layout: TableLayout = THRESHOLD_FREE,
        sections: Mapping[str, ResultsTable] | None = None,
    ):
        self.layout = layout
        self.sections = dict(sections or {})
        metrics = layout.metrics
        datasets = _first_seen(r["dataset"] for r in class_rows)
        domains = _first_seen(r["domain"] for r in class_rows)
        clash = set(datasets) & set(domains)
        if clash:
            raise ValueError(f"names {sorted(clash)} are used both as dataset and as domain; rename one")
        for dataset in datasets:
            owners = {r["domain"] for r in class_rows if r["dataset"] == dataset}
            if len(owners) > 1:
                raise ValueError(f"dataset {dataset!r} is listed under several domains {sorted(owners)}")
        self._class_rows = [
            {"level": "class", **{k: r[k] for k in KEY_COLUMNS[1:]}, **{m: float(r[m]) for m in metrics}}
            for r in class_rows
        ]
        self._dataset_rows = [self._mean_row(dataset) for dataset in datasets]
        self._domain_rows = [self._domain_row(domain) for domain in domains]

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.layout.metrics

    def _mean_row(self, dataset: str) -> dict:
        members = [r for r in self._class_rows if r["dataset"] == dataset]
        row = {"level": "dataset", "domain": members[0]["domain"], "dataset": dataset, "class": MEAN}
        return row | {m: _mean(r[m] for r in members) for m in self.metrics}

    def _domain_row(self, domain: str) -> dict:
        members = [r for r in self._dataset_rows if r["domain"] == domain]
        row = {"level": "domain", "domain": domain, "dataset": MEAN, "class": MEAN}
        return row | {m: _mean(r[m] for r in members) for m in self.metrics}

    @property
    def rows(self) -> list[dict]:
        """Class rows, then dataset means, then domain means (copies; key ``level`` tells which)."""
        return [dict(r) for r in self._class_rows + self._dataset_rows + self._domain_rows]

    def class_rows(self) -> list[dict]:
        """The per-class rows only (copies)."""
        return [dict(r) for r in self._class_rows]

    def class_means(self) -> dict[str, float]:
        """Each metric averaged over all classes of all datasets (NaN where no class has it)."""
        return {m: _mean(r[m] for r in self._class_rows) for m in self.metrics}

    def summary(self, prefix: str = "test") -> dict[str, float]:
        """``{prefix}/{dataset}/{metric}`` and ``{prefix}/{domain}/{metric}`` means of this table and its
        sections; missing ones left out."""
        out = {}
        for row in self._dataset_rows + self._domain_rows:
            name = row["dataset"] if row["level"] == "dataset" else row["domain"]
            for metric in self.metrics:
                if not math.isnan(row[metric]):
                    out[f"{prefix}/{name}/{metric}"] = row[metric]
        for section in self.sections.values():
            out |= section.summary(prefix)
        return out

    def to_markdown(self, classes: bool = True) -> str:
        """Paper-style table in percent (one decimal, "-" = missing) with its footnote, then the sections."""
        metrics, headers = self.metrics, self.layout.headers
        header = ["Domain", "Dataset", "Class", *(headers[m] for m in metrics)]
        lines = [f"### {self.layout.title}\n"] if self.layout.title else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * len(metrics)]
        shown = (self._class_rows if classes else []) + self._dataset_rows + self._domain_rows
        for row in shown:
            dataset = "**mean**" if row["level"] == "domain" else row["dataset"]
            cls = "**mean**" if row["level"] != "class" else row["class"]
            values = [format_percent(row[m]) for m in metrics]
            lines.append("| " + " | ".join([row["domain"], dataset, cls, *values]) + " |")
        text = "\n".join(lines) + "\n"
        if self.layout.footnote:
            text += "\n" + self.layout.footnote + "\n"
        for section in self.sections.values():
            text += "\n" + section.to_markdown(classes)
        return text

    def to_csv(self, path: str | Path) -> None:
        """All rows of this table (not its sections); fractions at full precision, missing values empty."""
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*KEY_COLUMNS, *self.metrics])
            writer.writeheader()
            for row in self.rows:
                writer.writerow(row | {m: "" if math.isnan(row[m]) else repr(row[m]) for m in self.metrics})

    def write_section_csvs(self, folder: str | Path, stem: str = "results") -> list[Path]:
        """Each section as ``<stem>_<name>.csv`` in ``folder``; the paths written."""
        paths = []
        for name, section in self.sections.items():
            paths.append(Path(folder) / f"{stem}_{name}.csv")
            section.to_csv(paths[-1])
        return paths

    @classmethod
    def from_csv(cls, path: str | Path, layout: TableLayout | None = None) -> ResultsTable:
        """Read a table written by ``to_csv`` (its class rows; means are recomputed identically).

        layout None: the threshold-free one, with the sample metrics when the file has them."""
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        layout = layout or layout_of_columns(reader.fieldnames or ())
        metrics = layout.metrics
        missing = [c for c in (*KEY_COLUMNS, *metrics) if rows and c not in rows[0]]
        if missing:
            raise ValueError(f"{path}: not a clipad results CSV, columns {missing} are missing")
        return cls(
            [{**r, **{m: float(r[m]) if r[m] else math.nan for m in metrics}} for r in rows if r["level"] == "class"],
            layout,
        )

    def wandb_table_data(self) -> tuple[list[str], list[list]]:
        """(columns, data) for ``wandb.Table(columns=..., data=...)``: fractions, None when missing."""
        columns = [*KEY_COLUMNS, *self.metrics]
        data = [[None if c in self.metrics and math.isnan(r[c]) else r[c] for c in columns] for r in self.rows]
        return columns, data

    def __repr__(self) -> str:
        return f"ResultsTable({len(self._class_rows)} classes, {len(self._dataset_rows)} datasets)"


INSPECTION_METRICS = (
    "image_overkill@2",
    "image_overkill@5",
    "image_overkill@10",
    "pixel_aupimo",
    "pixel_aupimo_std",
)
SAMPLE_INSPECTION_METRICS = ("sample_overkill@2", "sample_overkill@5", "sample_overkill@10")
_INSPECTION_HEADERS = {
    "image_overkill@2": "Overkill@2",
    "image_overkill@5": "Overkill@5",
    "image_overkill@10": "Overkill@10",
    "sample_overkill@2": "S-Overkill@2",
    "sample_overkill@5": "S-Overkill@5",
    "sample_overkill@10": "S-Overkill@10",
    "pixel_aupimo": "Pixel AUPIMO",
    "pixel_aupimo_std": "AUPIMO std",
}
INSPECTION = TableLayout(
    INSPECTION_METRICS,
    _INSPECTION_HEADERS,
    footnote=(
        "Overkill@e: share of normal images flagged at the threshold that lets e % of the anomalous images "
        "escape (AdaptCLIP; lower is better). AUPIMO: mean (and std) over anomalous images of the area under "
        "each image's TPR over the normal images' pixel FPR in [1e-5, 1e-4], log-scaled (anomalib)."
    ),
    title="Inspection metrics (threshold-free)",
)
MULTI_VIEW_INSPECTION = replace(
    INSPECTION,
    metrics=(*INSPECTION_METRICS[:3], *SAMPLE_INSPECTION_METRICS, *INSPECTION_METRICS[3:]),
    footnote=INSPECTION.footnote + " S-Overkill@e: the same over samples (max over their views).",
)
DECISION_METRICS = (
    "image_precision",
    "image_recall",
    "image_f1",
    "image_false_reject",
    "image_escape",
    "pixel_f1",
    "pixel_iou",
)
DECISIONS = TableLayout(
    DECISION_METRICS,
    {
        "image_precision": "Image precision",
        "image_recall": "Image recall",
        "image_f1": "Image F1",
        "image_false_reject": "False-reject (overkill) rate",
        "image_escape": "Escape (miss) rate",
        "pixel_f1": "Pixel F1",
        "pixel_iou": "Pixel IoU",
    },
    footnote="Decisions at thresholds fixed before the test labels were seen: score (map) >= threshold -> fail.",
    title="At the calibrated thresholds",
)


def decisions_layout(source: str) -> TableLayout:
    """The fixed-threshold layout titled with where its thresholds came from."""
    return replace(DECISIONS, title=f"At the calibrated thresholds ({source})")
