"""Image-level medical datasets (no masks): HeadCT and the yes/no brain-tumour folders (BrainMRI, Br35H).

    headct:   <root>/head_ct/*.png (or head_ct/head_ct/*.png, as Kaggle unpacks) + <root>/labels.csv
              (columns id, hemorrhage: 0/1; id N is file NNN.png)
    yes/no:   <root>/{no,yes}/*.{jpg,jpeg,png} (or one folder deeper)
All samples form the test split; the class name is the config's single class.
"""
from __future__ import annotations

import csv
from pathlib import Path

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.data.scanners.files import child, image_files, subdirs
from clipad.data.scanners.result import Scan


def scan_headct(root: Path, cfg: DictConfig) -> Scan:
    cls = str(cfg.all_classes[0])
    labels_csv = child(root, "labels.csv") or next(
        (f for d in subdirs(root) if (f := child(d, "labels.csv")) is not None), None
    )
    if labels_csv is None:
        raise DatasetError(f"HeadCT root {root} has no labels.csv.\n{layout_help(cfg)}")
    labels = _read_labels(labels_csv)
    image_dir = _deepest_image_dir(root)
    scan = Scan()
    unlabelled = []
    found_ids = set()
    for image in image_files(image_dir):
        label = labels.get(int(image.stem)) if image.stem.isdigit() else None
        if label is None:
            unlabelled.append(image)
            continue
        found_ids.add(int(image.stem))
        scan.add(image, None, label, cls, "hemorrhage" if label else "good", "test")
    scan.add_unpaired(unlabelled, cls, "test")
    missing = sorted(set(labels) - found_ids)
    if missing:
        raise DatasetError(
            f"{labels_csv} labels {len(missing)} images that are not in {image_dir}, e.g. ids {missing[:5]}.\n"
            f"{layout_help(cfg)}"
        )
    return scan


def _read_labels(path: Path) -> dict[int, int]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    # The Kaggle file's header is "id, hemorrhage" (with a space); read columns by position.
    return {int(r[0]): int(float(r[1])) for r in rows[1:] if len(r) >= 2 and r[0].strip().isdigit()}


def _deepest_image_dir(root: Path) -> Path:
    for candidate in (child(child(root, "head_ct"), "head_ct"), child(root, "head_ct"), root):
        if candidate is not None and image_files(candidate):
            return candidate
    return root


def scan_yes_no(root: Path, cfg: DictConfig) -> Scan:
    cls = str(cfg.all_classes[0])
    base = next((d for d in [root, *subdirs(root)] if child(d, "yes") and child(d, "no")), root)
    scan = Scan()
    for folder_name, label in (("no", 0), ("yes", 1)):
        for image in image_files(child(base, folder_name)):
            scan.add(image, None, label, cls, "tumor" if label else "good", "test")
    return scan
