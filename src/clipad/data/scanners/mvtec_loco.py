"""MVTec LOCO AD: logical and structural anomalies; one mask PNG per defect, in a folder per test image.

    <root>/<class>/train/good/*.png
    <root>/<class>/validation/good/*.png       normal, for model selection: not read (no split for it)
    <root>/<class>/test/{good,logical_anomalies,structural_anomalies}/<id>.png
    <root>/<class>/ground_truth/{logical_anomalies,structural_anomalies}/<id>/000.png [, 001.png ...]

An anomalous row's mask_path is the image's ground-truth folder; clipad.data.image_io.read_mask merges its masks.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from clipad.data.scanners.files import child, image_files, subdirs
from clipad.data.scanners.result import Scan

_NORMAL = "good"


def scan_mvtec_loco(root: Path, cfg: DictConfig) -> Scan:
    scan = Scan()
    for cls_dir in subdirs(root):
        train, test = child(cls_dir, "train"), child(cls_dir, "test")
        if train is None and test is None:
            continue
        cls = cls_dir.name
        ground_truth = child(cls_dir, "ground_truth")
        for image in image_files(child(train, _NORMAL)):
            scan.add(image, None, 0, cls, "good", "train")
        for defect_dir in subdirs(test):
            if defect_dir.name.lower() == _NORMAL:
                for image in image_files(defect_dir):
                    scan.add(image, None, 0, cls, "good", "test")
                continue
            folders = {d.name.lower(): d for d in subdirs(child(ground_truth, defect_dir.name)) if image_files(d)}
            for image in image_files(defect_dir):
                scan.add(image, folders.pop(image.stem.lower(), None), 1, cls, defect_dir.name, "test")
            for orphan in folders.values():  # masks of a test image that does not exist
                scan.add_unpaired(image_files(orphan), cls, "test")
    return scan
