"""Finding files the way the datasets are distributed: any case of folder names and extensions
(.png/.PNG/.bmp/.jpg/.JPG/.tif), hidden files (macOS ._ copies) ignored, masks paired with images by stem."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clipad.data.image_io import IMAGE_SUFFIXES, is_anomalous, read_mask


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def subdirs(folder: Path | None) -> list[Path]:
    """Visible sub-folders, sorted by name."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def image_files(folder: Path | None, recursive: bool = False) -> list[Path]:
    """Visible image files (extension in any case), sorted by path."""
    if folder is None or not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p) and p.is_file())


def child(parent: Path | None, *names: str) -> Path | None:
    """The entry of `parent` named like the first of `names` that exists, compared case-insensitively."""
    if parent is None or not parent.is_dir():
        return None
    entries = {p.name.lower(): p for p in sorted(parent.iterdir()) if _visible(p)}
    for name in names:
        if name.lower() in entries:
            return entries[name.lower()]
    return None


def find_dir(root: Path, names: Sequence[str], depth: int = 1) -> Path | None:
    """A folder named like one of `names` in root or up to `depth` levels below (archives often add a level)."""
    found = child(root, *names)
    if found is not None and found.is_dir():
        return found
    if depth > 0:
        for sub in subdirs(root):
            found = find_dir(sub, names, depth - 1)
            if found is not None:
                return found
    return None


def pair_masks(
    images: Iterable[Path], masks: Iterable[Path], mask_suffixes: Sequence[str]
) -> tuple[dict[Path, Path], list[Path]]:
    """Pair each image with the mask whose stem is the image's stem + one of `mask_suffixes` (case-insensitive,
    any extension). Returns the pairs and the masks that match no image."""
    by_stem = {m.stem.lower(): m for m in masks}
    pairs: dict[Path, Path] = {}
    used: set[Path] = set()
    for image in images:
        for suffix in mask_suffixes:
            mask = by_stem.get(image.stem.lower() + suffix.lower())
            if mask is not None:
                pairs[image] = mask
                used.add(mask)
                break
    return pairs, [m for m in by_stem.values() if m not in used]


class RelativePaths:
    """Resolves paths listed in a split or meta file against a root, also when the disk's folder or extension
    case differs from the listing (.JPG on disk, .jpg in the file). Folder listings are cached per instance:
    such files name thousands of images in a handful of folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[Path, dict[str, Path]] = {}

    def resolve(self, relative: str) -> Path | None:
        exact = self.root / relative
        if exact.is_file():
            return exact
        current = self.root
        parts = Path(relative.replace("\\", "/")).parts
        for i, part in enumerate(parts):
            entries = self._listing(current)
            match = entries.get(part.lower())
            if match is None and i == len(parts) - 1:
                stem = Path(part).stem.lower()
                match = next((p for name, p in entries.items() if Path(name).stem == stem and p.is_file()), None)
            if match is None:
                return None
            current = match
        return current if current.is_file() else None

    def _listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._listings:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            self._listings[folder] = {p.name.lower(): p for p in entries}
        return self._listings[folder]


def masks_anomalous(masks: Sequence[Path], rule: str) -> list[bool]:
    """Whether each mask has an anomalous pixel; decoded in threads (Pillow releases the GIL while decoding)."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda m: is_anomalous(read_mask(m, rule)), masks))
