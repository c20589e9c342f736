"""MVTec AD 2: the public test set (the only one with ground truth) beside the normal training images.

    <root>/<class>/train/good/*.png
    <root>/<class>/validation/good/*.png                  normal, for model selection: not read (no split for it)
    <root>/<class>/test_public/{good,bad}/*.png
    <root>/<class>/test_public/ground_truth/bad/<stem>_mask.png
    <root>/<class>/test_private/, test_private_mixed/     no ground truth: scored on benchmark.mvtec.com, not read
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from clipad.data.scanners.files import child, image_files, pair_masks, subdirs
from clipad.data.scanners.result import Scan

_NORMAL = "good"
_GROUND_TRUTH = "ground_truth"


def scan_mvtec_ad2(root: Path, cfg: DictConfig) -> Scan:
    scan = Scan()
    for cls_dir in subdirs(root):
        train, test = child(cls_dir, "train"), child(cls_dir, "test_public")
        if train is None and test is None:
            continue
        cls = cls_dir.name
        for image in image_files(child(train, _NORMAL)):
            scan.add(image, None, 0, cls, "good", "train")
        ground_truth = child(test, _GROUND_TRUTH)
        for defect_dir in subdirs(test):
            name = defect_dir.name.lower()
            if name == _GROUND_TRUTH:
                continue
            images = image_files(defect_dir)
            if name == _NORMAL:
                for image in images:
                    scan.add(image, None, 0, cls, "good", "test")
                continue
            pairs, orphans = pair_masks(images, image_files(child(ground_truth, defect_dir.name)), ("_mask", ""))
            for image in images:
                scan.add(image, pairs.get(image), 1, cls, defect_dir.name, "test")
            scan.add_unpaired(orphans, cls, "test")
    return scan
