"""Medical segmentation datasets (pixel labels only): every image has a mask; the image label is derived
from it (anomalous when the mask has an anomalous pixel). All samples form the test split.

    isic:      ISIC 2016 Part 1 test data: *.jpg and *_Segmentation.png anywhere under root
    clinicdb:  CVC-ClinicDB: Original/*.{tif,png} and Ground Truth/*.{tif,png} (or one folder deeper)
    colondb:   CVC-ColonDB: images/*.png and masks/*.png
    tn3k:      TN3K test set: test-image/*.jpg and test-mask/*.jpg
An image without a mask cannot be labelled: it is left out and counted as unpaired.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.data.scanners.files import find_dir, image_files, masks_anomalous, pair_masks
from clipad.data.scanners.result import Scan


def scan_isic(root: Path, cfg: DictConfig) -> Scan:
    files = image_files(root, recursive=True)
    masks = [f for f in files if f.stem.lower().endswith("_segmentation")]
    images = [f for f in files if not f.stem.lower().endswith("_segmentation")]
    return _labelled_by_masks(images, masks, ("_segmentation",), cfg)


def scan_clinicdb(root: Path, cfg: DictConfig) -> Scan:
    return _paired_folders(root, cfg, ["Original"], ["Ground Truth", "GroundTruth", "Ground_Truth"])


def scan_colondb(root: Path, cfg: DictConfig) -> Scan:
    return _paired_folders(root, cfg, ["images", "image"], ["masks", "mask", "GroundTruth", "Ground Truth"])


def scan_tn3k(root: Path, cfg: DictConfig) -> Scan:
    return _paired_folders(root, cfg, ["test-image"], ["test-mask"])


def _paired_folders(root: Path, cfg: DictConfig, image_names: list[str], mask_names: list[str]) -> Scan:
    image_dir, mask_dir = find_dir(root, image_names), find_dir(root, mask_names)
    if image_dir is None or mask_dir is None:
        missing = image_names[0] if image_dir is None else mask_names[0]
        raise DatasetError(f"{root}: no {missing!r} folder (looked in it and one level below).\n{layout_help(cfg)}")
    return _labelled_by_masks(image_files(image_dir), image_files(mask_dir), ("", "_mask"), cfg)


def _labelled_by_masks(images: list[Path], masks: list[Path], suffixes: Sequence[str], cfg: DictConfig) -> Scan:
    cls = str(cfg.all_classes[0])
    pairs, orphans = pair_masks(images, masks, suffixes)
    scan = Scan()
    paired = [image for image in images if image in pairs]
    for image, anomalous in zip(paired, masks_anomalous([pairs[i] for i in paired], str(cfg.get("mask_rule", "auto")))):
        scan.add(image, pairs[image], int(anomalous), cls, "anomaly" if anomalous else "good", "test")
    scan.add_unpaired(orphans + [image for image in images if image not in pairs], cls, "test")
    return scan
