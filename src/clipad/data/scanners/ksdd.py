"""KolektorSDD (v1): <root>/kosNN/PartK.jpg with PartK_label.bmp; a sample is anomalous when its mask is.

data.ksdd_bands=true (default, AdaCLIP's protocol): each image and its mask are cut into 3 horizontal
bands, rows [0, H//3), [H//3, 2H//3), [2H//3, H) as the reference slices them; each band is labelled by
its own mask; the normal bands are split 75/25 into train/test the way scikit-learn's
train_test_split(test_size=0.25, random_state=42) does it (the test part is the first ceil(n/4) entries
of RandomState(42).permutation(n)); anomalous bands are test samples. The reference orders the bands as
os.listdir returns the files (file-system dependent); clipad sorts them by path, so its split is
reproducible everywhere but need not equal the reference's on a given disk. data.ksdd_bands=false: whole
images, all in the test split.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from clipad.data.image_io import image_size, is_anomalous, read_mask
from clipad.data.scanners.files import image_files, masks_anomalous, pair_masks, subdirs
from clipad.data.scanners.result import Scan

log = logging.getLogger(__name__)

BAND_SPLIT_SEED = 42
BAND_TEST_FRACTION = 0.25


def scan_ksdd(root: Path, cfg: DictConfig) -> Scan:
    cls = str(cfg.all_classes[0])
    rule = str(cfg.get("mask_rule", "auto"))
    scan = Scan()
    pairs: list[tuple[Path, Path]] = []
    for part_dir in _part_dirs(root):
        files = image_files(part_dir)
        masks = [f for f in files if f.stem.lower().endswith("_label")]
        images = [f for f in files if not f.stem.lower().endswith("_label")]
        paired, orphans = pair_masks(images, masks, ("_label",))
        scan.add_unpaired(orphans, cls, "test")
        scan.add_unpaired([i for i in images if i not in paired], cls, "test")  # no label file: no label
        pairs += [(image, paired[image]) for image in images if image in paired]
    if cfg.get("ksdd_bands", True):
        _add_bands(scan, pairs, cls, rule)
    else:
        for (image, mask), anomalous in zip(pairs, masks_anomalous([m for _, m in pairs], rule)):
            scan.add(image, mask, int(anomalous), cls, "defect" if anomalous else "good", "test")
    return scan


def _part_dirs(root: Path) -> list[Path]:
    """kos01..kos50, directly under root or one level down (the archive's KolektorSDD/ folder)."""
    found = [d for d in subdirs(root) if d.name.lower().startswith("kos")]
    if not found:
        for sub in subdirs(root):
            found += [d for d in subdirs(sub) if d.name.lower().startswith("kos")]
    return found


def band_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of the three horizontal bands, sliced as the reference slices them."""
    bounds = [0, height // 3, height * 2 // 3, height]
    return [(0, bounds[i], width, bounds[i + 1]) for i in range(3)]


def _add_bands(scan: Scan, pairs: list[tuple[Path, Path]], cls: str, rule: str) -> None:
    normal: list[tuple[Path, Path, tuple[int, int, int, int]]] = []
    for image, mask_path in pairs:
        width, height = image_size(image)
        mask = read_mask(mask_path, rule)
        if mask.size != (width, height):
            log.warning("mask %s is %s but image %s is %s: resized to the image", mask_path, mask.size, image,
                        (width, height))
            mask = mask.resize((width, height), Image.NEAREST)
        for box in band_boxes(width, height):
            if is_anomalous(mask.crop(box)):
                scan.add(image, mask_path, 1, cls, "defect", "test", crop=box)
            else:
                normal.append((image, mask_path, box))
    order = np.random.RandomState(BAND_SPLIT_SEED).permutation(len(normal))
    n_test = math.ceil(BAND_TEST_FRACTION * len(normal))
    test = set(order[:n_test].tolist())
    for i, (image, mask_path, box) in enumerate(normal):
        scan.add(image, mask_path, 0, cls, "good", "test" if i in test else "train", crop=box)
