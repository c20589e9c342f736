"""The pre-flight input check: decode every image and mask of some sample rows and say what is wrong with them.

Findings per file (clipad.data.bad_inputs kinds): unreadable (truncated, corrupt, missing), mask_resized (mask
and image sizes differ: the mask is stretched to the image), empty_mask (an anomalous image whose mask marks
no pixel), large_mask (a mask marking more than LARGE_MASK_FRACTION of its image: likely inverted, 255 = normal).
Decoding is CPU-bound, so larger tables are decoded in worker processes. No torch here: inspect stays light.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from clipad.data.bad_inputs import BadInput
from clipad.data.catalog import DatasetError
from clipad.data.image_io import ImageReadError, read_mask, read_rgb

if TYPE_CHECKING:
    from clipad.data.batch import SampleRow

LARGE_MASK_FRACTION = 0.5  # data.large_mask: a mask marking more than this share of its image
MASK_POLICIES = ("warn", "error")  # data.empty_mask, data.large_mask
POOL_MIN_FILES = 64  # fewer pairs are decoded in this process: starting workers would cost more than it saves
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class _Pair:
    """One image (and its mask) to decode, with the crop boxes of the rows cut from it."""

    img_path: str
    mask_path: str | None
    crops: tuple[tuple[int, int, int, int] | None, ...]
    mask_rule: str


@dataclass(frozen=True)
class _Decoded:
    error_file: str | None = None  # the file that could not be read
    error: str | None = None
    image_size: tuple[int, int] | None = None  # (width, height), EXIF orientation applied
    mask_size: tuple[int, int] | None = None
    fractions: tuple[float, ...] = ()  # anomalous share of the mask per crop (after resizing to the image)


def _decode(pair: _Pair) -> _Decoded:
    """Decode one pair as the dataset will (module level: it runs in worker processes)."""
    try:
        image = read_rgb(pair.img_path)
    except ImageReadError as error:
        return _Decoded(pair.img_path, _reason(error))
    if pair.mask_path is None:
        return _Decoded(image_size=image.size)
    try:
        mask = read_mask(pair.mask_path, pair.mask_rule)
    except ImageReadError as error:
        return _Decoded(pair.mask_path, _reason(error), image_size=image.size)
    stretched = mask if mask.size == image.size else mask.resize(image.size, Image.BILINEAR)
    fractions = tuple(
        float((np.asarray(stretched if crop is None else stretched.crop(crop)) > 127).mean()) for crop in pair.crops
    )
    return _Decoded(image_size=image.size, mask_size=mask.size, fractions=fractions)


def _reason(error: ImageReadError) -> str:
    return error.reason.removeprefix(f"cannot read image {error.path}: ")


@dataclass
class InputReport:
    """What the check found in one dataset's rows."""

    dataset: str
    checked: int  # rows checked
    findings: list[BadInput]

    def of_kind(self, kind: str) -> list[BadInput]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def unreadable_files(self) -> set[str]:
        return {f.file for f in self.of_kind("unreadable")}

    def usable(self, rows: Sequence[SampleRow]) -> list[SampleRow]:
        """Rows none of whose files is unreadable."""
        bad = self.unreadable_files
        return [r for r in rows if r["img_path"] not in bad and (r["mask_path"] or "") not in bad]


def check_rows(
    rows: Sequence[SampleRow],
    *,
    dataset: str,
    mask_rule: str = "auto",
    pixel_labels: bool = True,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
) -> InputReport:
    """Decode every image and (pixel_labels) mask of `rows`; each distinct file pair once."""
    pairs: dict[tuple[str, str | None], list[SampleRow]] = {}
    for row in rows:
        mask = row["mask_path"] if row["mask_path"] and pixel_labels else None
        pairs.setdefault((row["img_path"], mask), []).append(row)
    tasks = [
        _Pair(img, mask, tuple(tuple(r["crop"]) if "crop" in r else None for r in group), mask_rule)
        for (img, mask), group in pairs.items()
    ]
    decoded: list[_Decoded] = []
    with tqdm(total=len(tasks), desc=f"checking {dataset}", unit="file", disable=None if progress else True) as bar:
        if workers > 0 and len(tasks) >= POOL_MIN_FILES:
            # fork: workers need only Pillow and numpy, already imported; no re-import of the caller's modules.
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for result in pool.map(_decode, tasks, chunksize=8):
                    decoded.append(result)
                    bar.update(1)
        else:
            for task in tasks:
                decoded.append(_decode(task))
                bar.update(1)
    findings = []
    for task, result, group in zip(tasks, decoded, pairs.values()):
        findings.extend(_findings(task, result, group, dataset))
    return InputReport(dataset, len(rows), findings)


def _findings(task: _Pair, result: _Decoded, rows: list[SampleRow], dataset: str) -> list[BadInput]:
    cls_name = rows[0]["cls_name"]
    if result.error_file is not None:
        return [BadInput("unreadable", result.error_file, dataset, cls_name, result.error or "")]
    if task.mask_path is None:
        return []
    found = []
    if result.mask_size != result.image_size:
        found.append(BadInput(
            "mask_resized", task.mask_path, dataset, cls_name,
            f"mask {_size(result.mask_size)}, image {task.img_path} {_size(result.image_size)}: mask resized to it",
        ))
    for row, fraction in zip(rows, result.fractions):
        if row["label"] == 1 and fraction == 0:
            found.append(BadInput("empty_mask", task.mask_path, dataset, cls_name,
                                  f"anomalous image {task.img_path} has an all-zero mask"))
            break
        if fraction > LARGE_MASK_FRACTION:
            found.append(BadInput(
                "large_mask", task.mask_path, dataset, cls_name,
                f"marks {fraction:.0%} of {task.img_path} (more than {LARGE_MASK_FRACTION:.0%}: inverted?)",
            ))
            break
    return found


def _size(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[0]}x{size[1]}"


def enforce_policies(report: InputReport, *, skip_bad: bool, empty_mask: str, large_mask: str,
                     listed_in: str = "") -> None:
    """Raise for findings the run's options make errors; warn-level findings pass (they are counted).

    skip_bad false: an unreadable file is an ImageReadError naming it; empty_mask / large_mask = error: a
    DatasetError naming the masks and the option.
    """
    for key, value in (("data.empty_mask", empty_mask), ("data.large_mask", large_mask)):
        if value not in MASK_POLICIES:
            raise DatasetError(f"{key}={value!r}: choose one of {', '.join(MASK_POLICIES)}")
    where = f"; all are listed in {listed_in}" if listed_in else ""
    unreadable = report.of_kind("unreadable")
    if unreadable and not skip_bad:
        first = unreadable[0]
        raise ImageReadError(first.file, f"{first.detail}; {len(unreadable)} unreadable file(s) in dataset "
                                         f"{report.dataset!r}{where}")
    empty = report.of_kind("empty_mask")
    if empty and empty_mask == "error":
        raise DatasetError(
            f"{len(empty)} anomalous image(s) of dataset {report.dataset!r} have an all-zero mask, e.g. "
            f"{[f.file for f in empty[:3]]}{where}. Fix the masks, or set data.empty_mask=warn to keep them "
            "(anomalous for image metrics, no anomalous pixel)."
        )
    large = report.of_kind("large_mask")
    if large and large_mask == "error":
        raise DatasetError(
            f"{len(large)} mask(s) of dataset {report.dataset!r} mark more than {LARGE_MASK_FRACTION:.0%} of their "
            f"image, e.g. {[f.file for f in large[:3]]}{where}: likely inverted (white must mark the anomaly). "
            "Invert them, or set data.large_mask=warn to use them as they are."
        )
