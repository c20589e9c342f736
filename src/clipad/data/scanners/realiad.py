"""Real-IAD and Real-IAD Variety: one JSON split file per class names every image of every camera view.

    <root>/realiad_jsons/<class>.json     {"meta": {"prefix": ..., "normal_class": "OK", ...},
                                           "train": [{"category", "anomaly_class", "image_path", "mask_path"}],
                                           "test":  [...]}
    <root>/realiad_1024/<prefix>/<image_path>, e.g. audiojack/OK/S0190/audiojack_0190_OK_C1_<time>.jpg
                                                    audiojack/NG/HS/S0001/audiojack_0001_NG_HS_C3_<time>.jpg

The official loader (Tencent/AnomalyDetection_Real-IAD, datasets/explicit_dataset.py) reads a test entry as
normal when its anomaly_class is meta.normal_class or its mask_path is null (a view of a defective sample that
does not show the defect); the same rule is applied to both splits here. The JSON is trusted for the split and
labels; every listed image must exist (one stat per file, cheap at 150k files). Masks that are listed but
missing are reported as unpaired and the row is kept without a mask.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.data.meta_json import reference_sample_id
from clipad.data.scanners.files import child
from clipad.data.scanners.result import Scan

_VIEW = re.compile(r"(?:^|_)(C\d+)(?:_|$)")  # audiojack_0190_OK_C1_20230922.jpg -> C1; ..._C01_... -> C01
_SPLITS = ("train", "test")


def view_id(image_path: str) -> str | None:
    """The camera view a Real-IAD file name spells ("C1".."C5", "C01".."C05"), None if it has none."""
    match = _VIEW.search(PurePosixPath(image_path).stem)
    return match.group(1) if match else None


def scan_realiad(root: Path, cfg: DictConfig) -> Scan:
    split_dir = _split_dir(root, cfg)
    image_dir = _image_dir(root, cfg)
    split_files = sorted(p for p in split_dir.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))
    if not split_files:
        raise DatasetError(f"{split_dir} holds no <class>.json split file.\n{layout_help(cfg)}")
    scan = Scan()
    missing: list[str] = []
    for split_file in split_files:
        _add_class(scan, split_file, image_dir, missing)
    if missing:
        raise DatasetError(
            f"the split files in {split_dir} list {len(missing)} images that are not under {image_dir}, e.g. "
            f"{missing[:3]}. Extract every class archive there, or choose the folder with data.image_dir.\n"
            f"{layout_help(cfg)}"
        )
    return scan


def _add_class(scan: Scan, split_file: Path, image_dir: Path, missing: list[str]) -> None:
    try:
        info = json.loads(split_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"split file {split_file} is not valid JSON: {error}") from error
    if not isinstance(info, dict) or not any(split in info for split in _SPLITS):
        raise DatasetError(f"split file {split_file}: expected an object with 'meta', 'train' and 'test' keys")
    meta = info.get("meta") or {}
    cls = split_file.stem
    normal_class = str(meta.get("normal_class", "OK"))
    base = os.path.join(image_dir, str(meta.get("prefix", cls)))
    for split in _SPLITS:
        for i, entry in enumerate(info.get(split) or []):
            try:
                relative = str(entry["image_path"])
                mask_relative = entry.get("mask_path") or None
                anomaly_class = str(entry.get("anomaly_class", normal_class))
            except (KeyError, TypeError, AttributeError) as error:
                raise DatasetError(
                    f"split file {split_file}: {split} entry {i} is malformed ({error!r}): {entry}"
                ) from error
            image = os.path.join(base, relative)
            if not os.path.isfile(image):
                missing.append(image)
                continue
            label = int(anomaly_class != normal_class and mask_relative is not None)
            mask = os.path.join(base, str(mask_relative)) if label else None
            if mask is not None and not os.path.isfile(mask):
                scan.add_unpaired([Path(image)], cls, split)  # listed mask absent: the image stays, without mask
                mask = None
            scan.add(
                Path(image), None if mask is None else Path(mask), label, cls, anomaly_class if label else "good",
                split, view_id=view_id(relative), sample_id=reference_sample_id(relative),
            )


def _split_dir(root: Path, cfg: DictConfig) -> Path:
    """data.split_dir under root, or under root/realiad_jsons/ (the official zip adds that level)."""
    name = str(cfg.get("split_dir") or "realiad_jsons")
    for parent in (child(root, "realiad_jsons"), root):
        found = child(parent, name)
        if found is not None and found.is_dir() and any(p.suffix.lower() == ".json" for p in found.iterdir()):
            return found
    raise DatasetError(
        f"{root} has no split folder {name}/ with <class>.json files (data.split_dir; the official sets are "
        f"realiad_jsons, realiad_jsons_sv, realiad_jsons_fuiad_0.0 .. 0.4).\n{layout_help(cfg)}"
    )


def _image_dir(root: Path, cfg: DictConfig) -> Path:
    """data.image_dir if set, else the first of data.image_dirs that exists, else root itself."""
    chosen = cfg.get("image_dir")
    if chosen:
        path = root / str(chosen)
        if not path.is_dir():
            raise DatasetError(f"image folder {path} (data.image_dir) does not exist.\n{layout_help(cfg)}")
        return path
    for name in cfg.get("image_dirs") or []:
        found = child(root, str(name))
        if found is not None and found.is_dir():
            return found
    return root
