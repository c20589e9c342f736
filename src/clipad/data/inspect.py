"""`python -m clipad.data.inspect data=NAME`: validate a dataset root and print per-class counts.

One row per class and split: normal images, anomalous images, masks found, unpaired files (masks without an
image, images without their label or mask). A message with the reason when the root cannot be used as
configured (exit status 2; missing root, no images, unknown or empty class, anomalous images without masks when
data.missing_mask=error).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from clipad.cli.hydra_setup import hydra_entry
from clipad.data.catalog import dataset_root
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

    Raises DatasetError (ConfigError for a bad option) when the root cannot be used; the counts are emitted
    first whenever the root could be scanned, so the table shows what is wrong.
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
    # The same checks a run makes before it starts.
    rows = select_rows(data, scan.rows, "test", root)
    check_missing_masks(rows, dataset=str(data.name), pixel_labels=pixel_labels,
                        policy=str(data.get("missing_mask", "error")))
    emit(f"ok: {len(rows)} test samples in {len(run_classes(data, scan.rows, root))} classes")
    return len(rows)


@hydra_entry("inspect")
def main(cfg: DictConfig) -> None:
    inspect_dataset(cfg)


if __name__ == "__main__":
    main()
