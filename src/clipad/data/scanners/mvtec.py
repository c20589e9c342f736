"""The MVTec AD layout (also MPDD, DTD-Synthetic, the synthetic set) and BTAD's variant of it.

    <root>/<class>/train/<good>/*            normal training images
    <root>/<class>/test/{<good>,<defect>}/*  test images
    <root>/<class>/ground_truth/<defect>/*   masks: <stem>_mask.<ext> (MVTec) or <stem>.<ext> (BTAD)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from clipad.data.scanners.files import child, image_files, pair_masks, subdirs
from clipad.data.scanners.result import Scan

_MASK_SUFFIXES = ("_mask", "")  # MVTec/MPDD/DTD: 000_mask.png; BTAD: 0000.png beside 0000.bmp


def scan_mvtec(root: Path, cfg: DictConfig) -> Scan:
    return scan_class_folders(root, normal_names=("good",))


def scan_btad(root: Path, cfg: DictConfig) -> Scan:
    return scan_class_folders(root, normal_names=("ok", "good"))


def scan_class_folders(root: Path, normal_names: Sequence[str]) -> Scan:
    """Every sub-folder of root with a train/ or test/ folder is a class; other folders are ignored."""
    scan = Scan()
    for cls_dir in subdirs(root):
        splits = {split: child(cls_dir, split) for split in ("train", "test")}
        if not any(d is not None and d.is_dir() for d in splits.values()):
            continue
        cls = cls_dir.name
        ground_truth = child(cls_dir, "ground_truth", "groundtruth", "gt")
        used_mask_dirs: set[Path] = set()
        for split, split_dir in splits.items():
            for defect_dir in subdirs(split_dir):
                images = image_files(defect_dir)
                if defect_dir.name.lower() in normal_names:
                    for image in images:
                        scan.add(image, None, 0, cls, "good", split)
                    continue
                mask_dir = child(ground_truth, defect_dir.name)
                if mask_dir is not None:
                    used_mask_dirs.add(mask_dir)
                pairs, orphans = pair_masks(images, image_files(mask_dir), _MASK_SUFFIXES)
                for image in images:
                    scan.add(image, pairs.get(image), 1, cls, defect_dir.name, split)
                scan.add_unpaired(orphans, cls, split)
        for mask_dir in subdirs(ground_truth):  # masks of a defect type that has no images
            if mask_dir not in used_mask_dirs and mask_dir.name.lower() not in normal_names:
                scan.add_unpaired(image_files(mask_dir), cls, "test")
    return scan
