"""`python -m clipad.data.inspect data=NAME`: validate a dataset root and print per-class counts.

One row per class and split: normal images, anomalous images, masks found, unpaired files (masks without an
image, images without their label or mask). Then (decode=true, the default) every image and mask is decoded
by the pre-flight check (clipad.data.input_check, worker processes) and each class's problems are listed:
unreadable files, image/mask size mismatches, empty masks of anomalous images, masks over half their image.
Exit status 2 with the reason when the root cannot be used as configured (missing root, no images, unknown or
empty class, anomalous images without masks when data.missing_mask=error, unreadable files unless
data.skip_bad=true, empty or large masks when data.empty_mask / data.large_mask = error).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from clipad.cli.hydra_setup import hydra_entry
from clipad.data.bad_inputs import KINDS
from clipad.data.catalog import dataset_root
from clipad.data.input_check import InputReport, check_rows, enforce_policies
from clipad.data.scanners import Scan, scan_layout
from clipad.data.scanners.selection import (
    check_missing_masks,
    found_classes,
    has_pixel_labels,
    run_classes,
    select_rows,
)

COLUMNS = ("class", "split", "normal", "anomalous", "masks", "unpaired")


def count_table(scan: Scan, classes: list[str], pixel_labels: bool) -> list[tuple[str, str, int, int, int, int]]:
    """(class, split, normal, anomalous, masks, unpaired) for every class and split that has files."""
    unpaired = Counter((u.cls_name, u.split) for u in scan.unpaired)
    table = []
    for cls in classes:
        for split in ("train", "test"):
            rows = [r for r in scan.rows if r["cls_name"] == cls and r["split"] == split]
            if not rows and not unpaired[cls, split]:
                continue
            lacking_mask = sum(1 for r in rows if pixel_labels and r["label"] == 1 and not r["mask_path"])
            table.append((
                cls,
                split,
                sum(1 for r in rows if r["label"] == 0),
                sum(1 for r in rows if r["label"] == 1),
                sum(1 for r in rows if r["mask_path"]),
                unpaired[cls, split] + lacking_mask,
            ))
    return table


def format_table(table: list[tuple]) -> str:
    cells = [COLUMNS, *[tuple(str(v) for v in row) for row in table]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    )


def inspect_dataset(cfg: DictConfig, emit: Callable[[str], None] = print) -> int:
    """Emit the report for cfg.data at its root and return its number of test samples.

    Raises DatasetError or ImageReadError (ConfigError for a bad option) when the root cannot be used; the
    counts and the decoding findings are emitted first whenever the root could be scanned.
    """
    data = cfg.data
    root = dataset_root(data, OmegaConf.select(cfg, "paths.data_dir", default=None))
    layout = str(data.get("layout", data.name))
    scan = scan_layout(layout, root, data)
    pixel_labels = has_pixel_labels(data, scan.rows)
    emit(f"dataset {data.name} ({data.get('domain', '?')}, layout {layout}) at {root}")
    found = found_classes(scan.rows)
    # data.classes restricts the report; all_classes does too where configs share one root (synthetic*).
    wanted = data.get("classes") or data.get("all_classes") or found
    classes = [c for c in found if c in wanted]
    emit(format_table(count_table(scan, classes, pixel_labels)))
    for cls, folder in scan.empty_classes.items():
        emit(f"class {cls}: no images (folder {folder})")
    report = None
    if cfg.get("decode", True):
        report = check_rows([r for r in scan.rows if r["cls_name"] in classes], dataset=str(data.name),
                            mask_rule=str(data.get("mask_rule", "auto")), pixel_labels=pixel_labels)
        for line in format_findings(report, classes):
            emit(line)
    # The same checks a run makes before it starts.
    rows = select_rows(data, scan.rows, "test", root)
    check_missing_masks(rows, dataset=str(data.name), pixel_labels=pixel_labels,
                        policy=str(data.get("missing_mask", "error")))
    skip_bad = bool(data.get("skip_bad", False))
    if report is not None:
        enforce_policies(report, skip_bad=skip_bad, empty_mask=str(data.get("empty_mask", "warn")),
                         large_mask=str(data.get("large_mask", "warn")))
        rows = report.usable(rows)
    summary = f"{len(rows)} test samples in {len(run_classes(data, scan.rows, root))} classes"
    counts = {} if report is None else _counts(report)
    if report is not None and report.unreadable_files:  # usable only because data.skip_bad=true: not "ok"
        emit(f"usable with data.skip_bad=true: {summary}; " + ", ".join(counts.values()))
    elif counts:
        emit(f"ok with warnings: {summary}; " + ", ".join(counts.values()))
    else:
        emit(f"ok: {summary}" + ("" if report is not None else " (files not decoded: decode=false)"))
    return len(rows)


def format_findings(report: InputReport, classes: list[str]) -> list[str]:
    """Per class with problems: a count line, then one line per file."""
    if not report.findings:
        return [f"decoded {report.checked} samples: no unreadable files, size mismatches or suspicious masks"]
    lines = [f"decoded {report.checked} samples: {len(report.findings)} problems"]
    for cls in classes:
        found = [f for f in report.findings if f.cls_name == cls]
        if not found:
            continue
        per_kind = ", ".join(f"{sum(f.kind == kind for f in found)} {label}" for kind, label in _labels().items()
                             if any(f.kind == kind for f in found))
        lines.append(f"class {cls}: {per_kind}")
        lines += [f"  {f.kind:<13} {f.file}" + (f"  ({f.detail})" if f.detail else "") for f in found]
    return lines


def _labels() -> dict[str, str]:
    """Kinds as inspect names them (a dataset check skips nothing itself)."""
    return {**KINDS, "unreadable": "unreadable", "mask_resized": "image/mask size mismatch"}


def _counts(report: InputReport) -> dict[str, str]:
    labels = _labels()
    return {kind: f"{len(report.of_kind(kind))} {labels[kind]}" for kind in labels if report.of_kind(kind)}


@hydra_entry("inspect")
def main(cfg: DictConfig) -> None:
    inspect_dataset(cfg)


if __name__ == "__main__":
    main()
