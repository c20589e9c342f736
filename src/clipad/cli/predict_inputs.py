"""The images `predict` scores: listing a folder/glob/file, reading them lazily, and normal prompt images.

Images are decoded one by one inside the DataLoader's workers (never all in memory); a file that cannot be
read is passed on as an error entry, so one bad file is named and skipped instead of ending the run.
"""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clipad.data.image_io import IMAGE_SUFFIXES, read_rgb
from clipad.data.transforms import SampleTransform
from clipad.errors import ConfigError, PathNotFoundError

log = logging.getLogger(__name__)
PREVIEW_SIZE = 320  # longest side of the image shown in a figure (a figure panel is about 270 px wide)
# Mask folders of the layouts clipad scans (MVTec/BTAD/MPDD ground_truth, VisA Masks, folder/ColonDB masks,
# ClinicDB Ground Truth, TN3K test-mask, DAGM Label): `input=<dataset root>` must not score their files.
MASK_FOLDERS = ("ground_truth", "groundtruth", "ground truth", "gt", "masks", "mask", "test-mask", "label")
# Masks stored beside their image (KSDD PartK_label.bmp) or named for it (ISIC *_segmentation.png).
MASK_STEM_SUFFIXES = ("_mask", "_label", "_segmentation")


@dataclass
class InputListing:
    root: Path  # output files mirror the paths below this folder
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not scored)


def mask_file_reason(path: Path, root: Path, stems: set[tuple[Path, str]]) -> str | None:
    """Why `path` is a mask of a known dataset layout rather than an image to score, or None.

    A file below `root` in a mask folder, or whose stem is another listed image's stem + a mask suffix
    (stems: (folder, lower-case stem) of every listed file).
    """
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    for folder in relative.parent.parts:
        name = folder.lower()
        if name in MASK_FOLDERS or name.endswith("groundtruth"):
            return f"in a mask folder ({folder}/)"
    stem = path.stem.lower()
    for suffix in MASK_STEM_SUFFIXES:
        if stem.endswith(suffix):
            if (path.parent, stem[: -len(suffix)]) in stems:
                return f"a mask beside its image ({suffix} file name)"
    return None


def list_input_images(spec: str, exclude: Path | None = None) -> InputListing:
    """Image files named by `input`: a file, a folder (searched recursively) or a glob pattern.

    Files under `exclude` (the output folder, when it lies inside the input folder) are left out, so that a
    second run does not score the first run's figures. Masks of known dataset layouts (mask_file_reason) are
    left out too and listed in `skipped`, so that `input=<dataset root>` scores only the images.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return InputListing(root=path.parent, paths=[path])
    if path.is_dir():
        root, candidates = path, sorted(p for p in path.rglob("*") if p.is_file())
    elif glob.has_magic(spec):
        candidates = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        root = _common_folder(candidates)
    else:
        raise PathNotFoundError(f"input={spec}: no such file or folder (give an image, a folder or a glob pattern)")
    excluded = exclude.resolve() if exclude is not None else None
    found = [
        p for p in candidates
        if p.suffix.lower() in IMAGE_SUFFIXES and not (excluded and p.resolve().is_relative_to(excluded))
    ]
    stems = {(p.parent, p.stem.lower()) for p in found}
    reasons = {p: mask_file_reason(p, root, stems) for p in found}
    paths = [p for p in found if reasons[p] is None]
    if not paths:
        masks = f" ({len(found)} files of mask folders left out)" if found else ""
        raise PathNotFoundError(f"input={spec}: no image files (suffixes {', '.join(IMAGE_SUFFIXES)}) found{masks}")
    return InputListing(root=root, paths=paths, skipped=[(p, r) for p, r in reasons.items() if r is not None])


def _common_folder(paths: list[Path]) -> Path:
    if not paths:
        return Path(".")
    parents = [p.parent.resolve() for p in paths]
    common = parents[0]
    while not all(p.is_relative_to(common) for p in parents):
        common = common.parent
    return common


def preview_of(image: Image.Image) -> np.ndarray:
    """A small uint8 RGB copy for the figure (the full image would be downscaled by matplotlib anyway)."""
    small = image.copy()
    small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.BICUBIC)
    return np.asarray(small)


class ImageFileDataset(Dataset):
    """One entry per file: the model input, the original size and (optionally) a preview, or the read error."""

    def __init__(self, paths: list[Path], transform: SampleTransform, previews: bool) -> None:
        self.paths = paths
        self.transform = transform
        self.previews = previews

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = read_rgb(path)
        except (OSError, ValueError) as error:  # ImageReadError is an OSError; it names the file
            return {"path": str(path), "error": str(getattr(error, "reason", error))}
        tensor, _ = self.transform(image, None)
        return {
            "path": str(path),
            "image": tensor,
            "size": (image.height, image.width),
            "preview": preview_of(image) if self.previews else None,
        }


@dataclass
class LoadedImages:
    """A collated batch of readable images, and the files of that batch that could not be read."""

    images: torch.Tensor | None  # [B, 3, S, S], None when no file of the batch was readable
    paths: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (height, width) as read
    previews: list[np.ndarray | None] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def collate_images(items: list[dict]) -> LoadedImages:
    good = [item for item in items if "error" not in item]
    return LoadedImages(
        images=torch.stack([item["image"] for item in good]) if good else None,
        paths=[item["path"] for item in good],
        sizes=[item["size"] for item in good],
        previews=[item["preview"] for item in good],
        unreadable=[(item["path"], item["error"]) for item in items if "error" in item],
    )


class FolderPrompts:
    """Normal prompt images for few-shot models, read from a folder (every class gets the same images)."""

    def __init__(self, folder: str | Path, transform: SampleTransform, shots: int | None = None) -> None:
        listing = list_input_images(str(folder))
        images = []
        for path in listing.paths:
            if shots is not None and len(images) == shots:
                break
            try:
                images.append(transform(read_rgb(path), None)[0])
            except (OSError, ValueError) as error:
                log.warning("shots_dir: skipped unreadable %s (%s)", path, getattr(error, "reason", error))
        if not images:
            raise PathNotFoundError(f"shots_dir={folder}: no readable normal images")
        if shots is not None and len(images) < shots:
            raise ConfigError(f"shots={shots} but shots_dir={folder} holds only {len(images)} readable images")
        self.images = torch.stack(images)

    @property
    def shots(self) -> int:
        return self.images.shape[0]

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        return self.images
