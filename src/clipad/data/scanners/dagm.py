"""DAGM 2007: <root>/ClassN/{Train,Test}/NNNN.PNG, masks ClassN/{Train,Test}/Label/NNNN_label.PNG (+ Labels.txt).

An image is anomalous when it has a label mask or Labels.txt flags it. data.dagm_split:
* adaclip (default, the AdaCLIP reference's preprocessing): in each of Train/ and Test/, the anomalous
  images and as many normal images (the first ones, in file order) form the test split; the remaining
  normal images form the train split;
* folders: Train/ is the train split, Test/ the test split.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from clipad.data.scanners.files import child, image_files, pair_masks, subdirs
from clipad.data.scanners.result import Scan

SPLIT_MODES = ("adaclip", "folders")


def scan_dagm(root: Path, cfg: DictConfig) -> Scan:
    mode = str(cfg.get("dagm_split", "adaclip"))
    if mode not in SPLIT_MODES:
        raise ValueError(f"data.dagm_split must be one of {SPLIT_MODES}, got {mode!r}")
    scan = Scan()
    for cls_dir in subdirs(root):
        for folder_name in ("Train", "Test"):
            folder = child(cls_dir, folder_name)
            if folder is None or not folder.is_dir():
                continue
            _scan_folder(scan, folder, cls_dir.name, folder_name.lower(), mode)
    return scan


def _scan_folder(scan: Scan, folder: Path, cls: str, folder_split: str, mode: str) -> None:
    images = image_files(folder)
    pairs, orphans = pair_masks(images, image_files(child(folder, "Label")), ("_label",))
    scan.add_unpaired(orphans, cls, folder_split)
    flagged = _flagged_in_labels_txt(child(folder, "Label"))
    anomalous = [i for i in images if i in pairs or i.name.lower() in flagged]
    normal = [i for i in images if i not in pairs and i.name.lower() not in flagged]
    for image in anomalous:
        scan.add(image, pairs.get(image), 1, cls, "defect", "test" if mode == "adaclip" else folder_split)
    for i, image in enumerate(normal):
        split = ("test" if i < len(anomalous) else "train") if mode == "adaclip" else folder_split
        scan.add(image, None, 0, cls, "good", split)


def _flagged_in_labels_txt(label_dir: Path | None) -> set[str]:
    """Image file names (lower case) that Labels.txt marks defective: lines `id label file ...`."""
    labels_txt = child(label_dir, "Labels.txt")
    if labels_txt is None:
        return set()
    flagged = set()
    for line in labels_txt.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "1":
            flagged.add(fields[2].lower())
    return flagged
