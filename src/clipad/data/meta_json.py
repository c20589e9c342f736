"""Sample tables as AdaCLIP/AnomalyCLIP meta.json files.

    {"train": {cls: [row, ...]}, "test": {cls: [row, ...]}}
    row = {"img_path", "mask_path" ("" when none), "cls_name", "specie_name", "anomaly" (0/1)}

Paths in the file are relative to the folder that holds it. A row with a crop box (KSDD bands) also carries
"crop": [left, top, right, bottom]; readers of the reference format ignore the extra key. Multi-view rows
(Real-IAD, as the AdaptCLIP reference writes them) carry "view_id"; their sample is the image path's
third-from-last + second-from-last components unless the row names it in "sample_id".
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from clipad.data.catalog import DatasetError

if TYPE_CHECKING:  # clipad.data.batch imports torch: keep scanning (and inspect) light
    from clipad.data.batch import SampleRow

SPLITS = ("train", "test")


def write_meta(rows: Iterable[SampleRow], path: str | Path) -> None:
    """Write rows as a meta.json at `path`, paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta_dict(rows, path.parent), indent=4) + "\n")


def read_meta(path: str | Path) -> list[SampleRow]:
    """Rows of a meta.json, paths made absolute against its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DatasetError(f"meta file {path} does not exist: set data.meta_path to an AdaCLIP-style meta.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"meta file {path} is not valid JSON: {error}") from error
    return rows_from_meta(meta, path.parent, source=str(path))


def meta_dict(rows: Iterable[SampleRow], root: Path) -> dict[str, dict[str, list[dict]]]:
    meta: dict[str, dict[str, list[dict]]] = {split: {} for split in SPLITS}
    for row in rows:
        entry = {
            "img_path": _relative(row["img_path"], root),
            "mask_path": _relative(row["mask_path"], root) if row["mask_path"] else "",
            "cls_name": row["cls_name"],
            "specie_name": row["defect_type"],
            "anomaly": int(row["label"]),
        }
        if "crop" in row:
            entry["crop"] = list(row["crop"])
        for key in ("view_id", "sample_id"):
            if key in row:
                entry[key] = row[key]
        meta.setdefault(row["split"], {}).setdefault(row["cls_name"], []).append(entry)
    return meta


def rows_from_meta(meta: Mapping, root: Path, source: str = "meta.json") -> list[SampleRow]:
    if not isinstance(meta, Mapping) or not any(split in meta for split in SPLITS):
        raise DatasetError(f"{source}: expected an object with 'train' and/or 'test' keys (AdaCLIP meta.json format)")
    rows: list[SampleRow] = []
    for split in SPLITS:
        for cls, entries in (meta.get(split) or {}).items():
            for i, entry in enumerate(entries):
                try:
                    rows.append(_row(entry, root, cls, split))
                except (KeyError, TypeError, ValueError) as error:
                    raise DatasetError(f"{source}: {split}/{cls} row {i} is malformed ({error!r}): {entry}") from error
    return rows


def _row(entry: Mapping, root: Path, cls: str, split: str) -> SampleRow:
    label = int(entry["anomaly"])
    if label not in (0, 1):
        raise ValueError(f"anomaly must be 0 or 1, got {entry['anomaly']!r}")
    mask = entry.get("mask_path") or None
    row: SampleRow = {
        "img_path": str(root / _portable(entry["img_path"])),
        "mask_path": None if mask is None else str(root / _portable(mask)),
        "label": label,
        "cls_name": str(entry.get("cls_name") or cls),
        "defect_type": str(entry.get("specie_name") or ("anomaly" if label else "good")),
        "split": split,
    }
    if entry.get("crop") is not None:
        left, top, right, bottom = (int(v) for v in entry["crop"])
        row["crop"] = (left, top, right, bottom)
    if entry.get("view_id") not in (None, ""):
        row["view_id"] = str(entry["view_id"])
        sample = entry.get("sample_id") or reference_sample_id(entry["img_path"])
        if sample:
            row["sample_id"] = str(sample)
    return row


def reference_sample_id(image_path: str) -> str | None:
    """The AdaptCLIP reference's sample key of a multi-view image: the path's third-from-last +
    second-from-last components ("audiojack/OK/S0190/x.jpg" -> "OKS0190"); None for paths too short."""
    parts = PurePosixPath(image_path.replace("\\", "/")).parts
    return parts[-3] + parts[-2] if len(parts) >= 3 else None


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _portable(path: str) -> str:
    return str(path).replace("\\", "/")  # meta files written on Windows
