"""MVTec LOCO AD: logical and structural anomalies; one mask PNG per defect, in a folder per test image.

    <root>/<class>/train/good/*.png
    <root>/<class>/validation/good/*.png       normal, for model selection: not read (no split for it)
    <root>/<class>/test/{good,logical_anomalies,structural_anomalies}/<id>.png
    <root>/<class>/ground_truth/{logical_anomalies,structural_anomalies}/<id>/000.png [, 001.png ...]

An anomalous row's mask_path is the image's ground-truth folder; read_merged_mask turns it into one mask.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from clipad.data.image_io import ImageReadError, read_mask
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


def read_merged_mask(folder: str | Path, rule: str = "nonzero") -> Image.Image:
    """One grey 'L' mask (0/255) that is the union of the folder's per-defect masks (each binarised by `rule`,
    see image_io.read_mask). LOCO's masks of one image share its size; a path to a single mask file also works."""
    folder = Path(folder)
    files = image_files(folder) if folder.is_dir() else [folder]
    if not files:
        raise ImageReadError(folder, "the ground-truth folder holds no mask image")
    union: np.ndarray | None = None
    for file in files:
        anomalous = np.asarray(read_mask(file, rule)) > 127
        if union is not None and anomalous.shape != union.shape:
            raise ImageReadError(file, f"its size {anomalous.shape[::-1]} differs from {files[0]}'s {union.shape[::-1]}")
        union = anomalous if union is None else union | anomalous
    assert union is not None
    return Image.fromarray(np.where(union, 255, 0).astype(np.uint8), mode="L")
