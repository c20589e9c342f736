"""VisA: images listed by the split file split_csv/1cls.csv (columns object, split, label, image, mask).

    <root>/split_csv/1cls.csv
    <root>/<class>/Data/Images/{Normal,Anomaly}/*.JPG
    <root>/<class>/Data/Masks/Anomaly/*.png      region ids: every value > 0 is anomalous
"""
from __future__ import annotations

import csv
from pathlib import Path

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.data.scanners.files import RelativePaths, child, image_files
from clipad.data.scanners.result import Scan

_ANOMALOUS_LABELS = ("anomaly", "anomalous", "abnormal", "1")


def scan_visa(root: Path, cfg: DictConfig) -> Scan:
    split_file = child(child(root, "split_csv"), "1cls.csv")
    if split_file is None:
        raise DatasetError(
            f"VisA root {root} has no split file split_csv/1cls.csv (it ships with VisA and fixes the "
            f"train/test split).\n{layout_help(cfg)}"
        )
    paths = RelativePaths(root)
    scan = Scan()
    missing: list[str] = []
    listed_masks: set[Path] = set()
    with open(split_file, newline="", encoding="utf-8-sig") as handle:
        for record in csv.DictReader(handle):
            record = {k.strip().lower(): (v or "").strip() for k, v in record.items() if k}
            cls = record["object"]
            if child(root, cls) is None:
                continue  # class not on disk: only a problem if it is used (reported then)
            image = paths.resolve(record["image"])
            if image is None:
                missing.append(record["image"])
                continue
            label = 1 if record["label"].lower() in _ANOMALOUS_LABELS else 0
            mask = paths.resolve(record["mask"]) if record.get("mask") else None
            if mask is not None:
                listed_masks.add(mask)
            scan.add(image, mask, label, cls, "anomaly" if label else "good", record["split"].lower())
    if missing:
        raise DatasetError(
            f"{split_file} lists {len(missing)} images that are not under {root}, e.g. {missing[:3]}. "
            f"Re-extract the VisA archive there.\n{layout_help(cfg)}"
        )
    for cls in sorted({row["cls_name"] for row in scan.rows}):
        mask_dir = child(child(child(child(root, cls), "Data"), "Masks"), "Anomaly")
        scan.add_unpaired([m for m in image_files(mask_dir) if m not in listed_masks], cls, "test")
    return scan
