"""One dataset split as a torch Dataset of samples, and the collate function that builds a Batch."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TypedDict

import torch
from PIL import Image
from torch.utils.data import Dataset

from clipad.data.batch import Batch, SampleRow
from clipad.data.catalog import DatasetError
from clipad.data.image_io import is_anomalous, read_mask, read_rgb
from clipad.data.mosaic import tile_2x2
from clipad.data.transforms import SampleTransform

log = logging.getLogger(__name__)

class _SampleFields(TypedDict):
    image: torch.Tensor  # [3, H, W]
    mask: torch.Tensor  # [1, H, W]
    has_mask: bool
    label: int
    cls_name: str
    prompt_name: str
    dataset: str
    path: str


class Sample(_SampleFields, total=False):
    normal_image: torch.Tensor  # [3, H, W], only when the dataset pairs queries with normal images
    defect_type: str
    view_id: str  # multi-view datasets only (SampleRow.view_id)
    view_sample_id: str  # SampleRow.sample_id: the physical sample of which this image is one view


def sample_id(row: SampleRow) -> str:
    """The image path, plus the crop box for samples cut from an image (KSDD bands): unique per sample."""
    if "crop" in row:
        return f"{row['img_path']}#crop={','.join(str(v) for v in row['crop'])}"
    return row["img_path"]


class AnomalyDataset(Dataset):
    """Rows of one dataset -> transformed samples.

    pixel_labels: the dataset has masks (normal images then have a valid all-zero mask); False for
    image-level datasets, whose samples all have has_mask False. mosaic_p: probability that a sample is
    replaced by a 2x2 mosaic of 4 random rows of its class (AdaCLIP training). normal_rows: per class,
    the pool from which every sample draws one fresh normal image (AdaptCLIP training); a row with a view
    (Real-IAD, Real-IAD Variety) draws from the normal images of its own view, as its prompts are drawn.
    """

    def __init__(
        self,
        rows: Sequence[SampleRow],
        *,
        dataset: str,
        transform: SampleTransform,
        prompt_names: Mapping[str, str],
        pixel_labels: bool,
        mask_rule: str = "auto",
        mosaic_p: float = 0.0,
        normal_rows: Mapping[str, Sequence[SampleRow]] | None = None,
        normal_transform: SampleTransform | None = None,
    ) -> None:
        self.rows = list(rows)
        self.dataset = dataset
        self.transform = transform
        self.prompt_names = dict(prompt_names)
        self.pixel_labels = pixel_labels
        self.mask_rule = mask_rule
        self.mosaic_p = float(mosaic_p)
        self.normal_rows = normal_rows
        self.normal_transform = normal_transform or transform
        self._class_rows: dict[str, list[SampleRow]] = {}
        for row in self.rows:
            self._class_rows.setdefault(row["cls_name"], []).append(row)
        self._view_normals: dict[tuple[str, str], list[SampleRow]] = {}
        for cls_name, pool in (normal_rows or {}).items():
            for normal in pool:
                if normal.get("view_id"):
                    self._view_normals.setdefault((cls_name, normal["view_id"]), []).append(normal)
        self._warned_sizes: set[str] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        row = self.rows[index]
        if self.mosaic_p > 0 and float(torch.rand(())) < self.mosaic_p:
            image, mask, label, has_mask, path = self._mosaic(row["cls_name"])
        else:
            image, mask = self.load(row)
            label, has_mask, path = row["label"], self._has_mask(row), sample_id(row)
        image_tensor, mask_tensor = self.transform(image, mask)
        sample = Sample(
            image=image_tensor,
            mask=mask_tensor,
            has_mask=has_mask,
            label=int(label),
            cls_name=row["cls_name"],
            prompt_name=self.prompt_names[row["cls_name"]],
            dataset=self.dataset,
            path=path,
        )
        if self.normal_rows is not None:
            sample["normal_image"] = self._random_normal(row)
        if not path.startswith("mosaic:"):
            sample["defect_type"] = row["defect_type"]
            if row.get("view_id") and row.get("sample_id"):
                sample["view_id"], sample["view_sample_id"] = row["view_id"], row["sample_id"]
        return sample

    def load(self, row: SampleRow) -> tuple[Image.Image, Image.Image | None]:
        """The row's RGB image and grey mask (None without a mask), cropped to its box if it has one."""
        image = read_rgb(row["img_path"])
        mask = read_mask(row["mask_path"], self.mask_rule) if row["mask_path"] and self.pixel_labels else None
        if mask is not None and mask.size != image.size:
            if row["mask_path"] not in self._warned_sizes:
                self._warned_sizes.add(row["mask_path"])
                # Counted by the pre-flight check (bad_inputs.csv, kind mask_resized); said here too.
                log.warning("mask %s is %sx%s but its image %s is %sx%s: mask resized to the image",
                            row["mask_path"], *mask.size, row["img_path"], *image.size)
            mask = mask.resize(image.size, Image.BILINEAR)
        if "crop" in row:
            image = image.crop(row["crop"])
            mask = None if mask is None else mask.crop(row["crop"])
        return image, mask

    def image_tensor(self, row: SampleRow) -> torch.Tensor:
        """A row's image through the transform without augmentation (few-shot prompts, normal pairing)."""
        image, _ = self.load(row)
        return self.normal_transform(image, None)[0]

    def _has_mask(self, row: SampleRow) -> bool:
        if row.get("classification_only"):
            return False
        return self.pixel_labels and (row["label"] == 0 or bool(row["mask_path"]))

    def _mosaic(self, cls_name: str) -> tuple[Image.Image, Image.Image, int, bool, str]:
        pool = self._class_rows[cls_name]
        # Four distinct rows as the reference's random.sample; with replacement only if the class is smaller.
        picks = torch.randperm(len(pool))[:4].tolist() if len(pool) >= 4 else torch.randint(len(pool), (4,)).tolist()
        rows = [pool[i] for i in picks]
        loaded = [self.load(row) for row in rows]
        image, mask = tile_2x2([im for im, _ in loaded], [m for _, m in loaded])
        # The reference keeps the indexed sample's image label; clipad derives it from the tiled mask (and
        # from tiles that are anomalous but have no mask), so label and mask agree.
        label = int(is_anomalous(mask) or any(r["label"] == 1 and m is None for r, (_, m) in zip(rows, loaded)))
        has_mask = all(self._has_mask(row) for row in rows)
        return image, mask, label, has_mask, "mosaic:" + "|".join(sample_id(row) for row in rows)

    def _random_normal(self, row: SampleRow) -> torch.Tensor:
        cls_name, view = row["cls_name"], row.get("view_id")
        pool = self.normal_rows.get(cls_name) if self.normal_rows is not None else None
        if not pool:
            raise DatasetError(f"dataset {self.dataset!r} has no normal image of class {cls_name!r} to pair with")
        if view:
            pool = self._view_normals.get((cls_name, view))
            if not pool:
                views = sorted(v for c, v in self._view_normals if c == cls_name)
                raise DatasetError(
                    f"dataset {self.dataset!r} pairs each image with a normal image of its own view, but view "
                    f"{view!r} of class {cls_name!r} has none (views with normal images: {views}); complete the "
                    "split files or leave the view out")
        return self.image_tensor(pool[int(torch.randint(len(pool), ()))])


def collate_batch(samples: Sequence[Sample]) -> Batch:
    normal = [s["normal_image"] for s in samples if "normal_image" in s]
    return Batch(
        image=torch.stack([s["image"] for s in samples]),
        mask=torch.stack([s["mask"] for s in samples]),
        has_mask=torch.tensor([s["has_mask"] for s in samples], dtype=torch.bool),
        label=torch.tensor([s["label"] for s in samples], dtype=torch.long),
        cls_name=[s["cls_name"] for s in samples],
        prompt_name=[s["prompt_name"] for s in samples],
        dataset=[s["dataset"] for s in samples],
        path=[s["path"] for s in samples],
        normal_image=torch.stack(normal) if len(normal) == len(samples) else None,
        view_id=_optional_strings(samples, "view_id"),
        view_sample_id=_optional_strings(samples, "view_sample_id"),
        defect_type=[s["defect_type"] for s in samples] if all("defect_type" in s for s in samples) else None,
    )


def _optional_strings(samples: Sequence[Sample], key: str) -> list[str] | None:
    """Per sample its `key` ("" where absent), or None when no sample has it."""
    if not any(key in s for s in samples):
        return None
    return [s.get(key, "") for s in samples]
