"""The MVTec AD layout (also MPDD, DTD-Synthetic, the synthetic set) and BTAD's variant of it.

    <root>/<class>/train/<good>/*            normal training images
    <root>/<class>/test/{<good>,<defect>}/*  test images
    <root>/<class>/ground_truth/<defect>/*   masks: <stem>_mask.<ext> (MVTec) or <stem>.<ext> (BTAD)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from clipad.data.scanners.files import child, image_files, pair_masks, subdirs
from clipad.data.scanners.result import Scan

_MASK_SUFFIXES = ("_mask", "")  # MVTec/MPDD/DTD: 000_mask.png; BTAD: 0000.png beside 0000.bmp
MVTEC_SPLIT_FOLDERS = {"train": "train", "test": "test"}


def scan_mvtec(root: Path, cfg: DictConfig) -> Scan:
    return scan_class_folders(root, normal_names=("good",))


def scan_btad(root: Path, cfg: DictConfig) -> Scan:
    return scan_class_folders(root, normal_names=("ok", "good"))


def scan_class_folders(
    root: Path,
    normal_names: Sequence[str],
    split_folders: Mapping[str, str] = MVTEC_SPLIT_FOLDERS,
    masks_in_test_folder: bool = False,
) -> Scan:
    """Every sub-folder of root with one of the split folders is a class; other folders are ignored.

    split_folders: split -> its folder name (MVTec AD 2 tests in test_public/). masks_in_test_folder: the
    ground_truth/ folder lies inside the test folder (MVTec AD 2), not beside it.
    """
    scan = Scan()
    for cls_dir in subdirs(root):
        splits = {split: child(cls_dir, folder) for split, folder in split_folders.items()}
        if not any(d is not None and d.is_dir() for d in splits.values()):
            continue
        cls = cls_dir.name
        ground_truth = child(splits["test"] if masks_in_test_folder else cls_dir, "ground_truth", "groundtruth", "gt")
        used_mask_dirs: set[Path] = set()
        for split, split_dir in splits.items():
            for defect_dir in subdirs(split_dir):
                if defect_dir == ground_truth:
                    continue
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
