"""User data: a plain folder of images (`data=folder`) or an AdaCLIP/AnomalyCLIP meta.json (`data=meta`).

    folder:  <root>/normal/*, <root>/abnormal/*, optional <root>/masks/* paired by stem (<stem> or
             <stem>_mask), optional <root>/train/normal/* (few-shot prompts); or the same inside one
             sub-folder per class (<root>/<class>/normal/...). normal/abnormal/masks form the test split.
    meta:    data.meta_path=/path/meta.json, image paths relative to its folder. A row whose mask_path is a
             folder is classification only (no mask), as the AdaptCLIP reference reads it.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError
from clipad.data.meta_json import read_meta
from clipad.data.scanners.files import child, image_files, pair_masks, subdirs
from clipad.data.scanners.result import Scan


def scan_folder(root: Path, cfg: DictConfig) -> Scan:
    if _is_class_folder(root):
        classes = [(str(cfg.get("class_name") or root.name), root)]
    else:
        classes = [(d.name, d) for d in subdirs(root) if _is_class_folder(d)]
    scan = Scan()
    if not _is_class_folder(root):
        # Sub-folders without any image: empty classes the user should hear about (inspect, data.classes).
        scan.empty_classes = {d.name: str(d) for d in subdirs(root) if not image_files(d, recursive=True)}
    for cls, folder in classes:
        normal, abnormal = image_files(child(folder, "normal")), image_files(child(folder, "abnormal"))
        pairs, orphans = pair_masks(normal + abnormal, image_files(child(folder, "masks")), ("", "_mask"))
        for image in normal:
            scan.add(image, pairs.get(image), 0, cls, "good", "test")
        for image in abnormal:
            scan.add(image, pairs.get(image), 1, cls, "anomaly", "test")
        for image in image_files(child(child(folder, "train"), "normal")):
            scan.add(image, None, 0, cls, "good", "train")
        scan.add_unpaired(orphans, cls, "test")
    return scan


def _is_class_folder(folder: Path) -> bool:
    return child(folder, "normal") is not None or child(folder, "abnormal") is not None


def scan_meta(root: Path, cfg: DictConfig) -> Scan:
    meta_path = Path(str(cfg.get("meta_path") or root / "meta.json")).expanduser()
    rows = read_meta(meta_path)
    missing = [row["img_path"] for row in rows if not Path(row["img_path"]).is_file()]
    if missing:
        raise DatasetError(
            f"{meta_path} lists {len(missing)} images that do not exist, e.g. {missing[:3]}; its paths are read "
            f"relative to {meta_path.parent if not meta_path.is_dir() else meta_path}."
        )
    scan = Scan(rows=rows)
    for row in rows:
        if row["mask_path"] and Path(row["mask_path"]).is_dir():
            row["mask_path"] = None  # the reference's convention for "no mask": image-level labels only
            row["classification_only"] = True
        elif row["mask_path"] and not Path(row["mask_path"]).is_file():
            scan.add_unpaired([Path(row["img_path"])], row["cls_name"], row["split"])  # its mask is missing
            row["mask_path"] = None
    return scan
