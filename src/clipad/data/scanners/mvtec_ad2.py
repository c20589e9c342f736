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

from clipad.data.scanners.mvtec import scan_class_folders
from clipad.data.scanners.result import Scan

# validation/ and the private test sets are left out: only these folders are read
_SPLIT_FOLDERS = {"train": "train", "test": "test_public"}


def scan_mvtec_ad2(root: Path, cfg: DictConfig) -> Scan:
    return scan_class_folders(root, normal_names=("good",), split_folders=_SPLIT_FOLDERS, masks_in_test_folder=True)
