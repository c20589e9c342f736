"""Choosing the rows a run uses from a sample table, with errors that say what exists."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.errors import ConfigError

if TYPE_CHECKING:  # clipad.data.batch imports torch: keep scanning (and inspect) light
    from clipad.data.batch import SampleRow

MISSING_MASK_POLICIES = ("error", "image_only")


def found_classes(rows: Sequence[SampleRow]) -> list[str]:
    """Classes present in a table, in first-seen order (scanners emit them sorted)."""
    return list(dict.fromkeys(row["cls_name"] for row in rows))


def run_classes(cfg: DictConfig, rows: Sequence[SampleRow], root: Path) -> list[str]:
    """The classes a run uses: data.classes, else the config's all_classes, else (folder/meta) those found.

    Raises DatasetError for a requested class the dataset does not have, or a class the run needs that has
    no image under root. The messages name the key that restricts this dataset: cfg.classes_option
    (data.train_classes for training and validation datasets), else data.classes (the target's).
    """
    found = found_classes(rows)
    known = [str(c) for c in cfg.get("all_classes") or []] or found
    requested = [str(c) for c in cfg.get("classes") or []]
    name = cfg.get("name")
    option = str(cfg.get("classes_option") or "data.classes")
    unknown = [c for c in requested if c not in known]
    empty_folders = [str(root / c) for c in unknown if not cfg.get("all_classes") and (root / c).is_dir()]
    if empty_folders:  # folder/meta layouts: the classes are the folders found with images
        raise DatasetError(
            f"data.classes={requested}: the class folder(s) {empty_folders} exist but hold no images (expected "
            f"image files in <class>/normal/ and <class>/abnormal/). Add the images, or choose among the classes "
            f"with images: {found}.\n{layout_help(cfg)}"
        )
    if unknown:
        raise DatasetError(
            f"unknown class(es) {unknown} in {option} for dataset {name!r}; its classes: {known} (found under "
            f"{root}: {found}).\n{layout_help(cfg)}"
        )
    classes = requested or known
    absent = [c for c in classes if c not in found]
    if absent:
        raise DatasetError(
            f"class(es) {absent} of dataset {name!r} have no images under {root}; classes found there: {found}. "
            f"Complete the download, or restrict the run with {restriction(option, str(name), found)}."
            f"\n{layout_help(cfg)}"
        )
    return classes


def restriction(option: str, dataset: str, classes: list[str]) -> str:
    """The command-line override that restricts `dataset` to `classes` through `option`."""
    listed = ",".join(classes)
    if option == "data.train_classes":
        return f"'data.train_classes={{{dataset}: [{listed}]}}'"
    return f"{option}=[{listed}]"


def select_rows(cfg: DictConfig, rows: Sequence[SampleRow], split: str, root: Path) -> list[SampleRow]:
    """Rows of the run's classes in `split`, ordered by (class, path): every class must have some."""
    classes = run_classes(cfg, rows, root)
    per_class = {cls: [r for r in rows if r["cls_name"] == cls and r["split"] == split] for cls in classes}
    empty = [cls for cls, chosen in per_class.items() if not chosen]
    if empty:
        splits = {cls: dict(Counter(r["split"] for r in rows if r["cls_name"] == cls)) for cls in empty}
        raise DatasetError(
            f"class(es) {empty} of dataset {cfg.get('name')!r} have no '{split}' images under {root} "
            f"(images per split found: {splits}).\n{layout_help(cfg)}"
        )
    return [row for cls in classes for row in sorted(per_class[cls], key=_row_order)]


def _row_order(row: SampleRow) -> tuple[str, tuple[int, ...]]:
    return row["img_path"], tuple(row.get("crop", ()))


def has_pixel_labels(cfg: DictConfig, rows: Sequence[SampleRow]) -> bool:
    """The dataset's pixel_labels fact; unset (folder, meta): whether any of its samples has a mask."""
    declared = cfg.get("pixel_labels")
    return bool(declared) if declared is not None else any(row["mask_path"] for row in rows)


def check_missing_masks(rows: Sequence[SampleRow], *, dataset: str, pixel_labels: bool, policy: str) -> None:
    """Anomalous images without a mask in a dataset with masks: an error, or (image_only) image metrics only."""
    if policy not in MISSING_MASK_POLICIES:
        raise ConfigError(f"data.missing_mask must be one of {MISSING_MASK_POLICIES}, got {policy!r}")
    lacking = [r["img_path"] for r in rows
               if pixel_labels and r["label"] == 1 and not r["mask_path"] and not r.get("classification_only")]
    if lacking and policy == "error":
        raise DatasetError(
            f"{len(lacking)} anomalous images of dataset {dataset!r} have no mask, e.g. {lacking[:3]}. Add the "
            "masks, or set data.missing_mask=image_only to use them for image-level metrics only."
        )
