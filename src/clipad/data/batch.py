"""The two data contracts every part relies on: a sample-table row and a batch."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypedDict

import torch


class _SampleRowFields(TypedDict):
    img_path: str
    mask_path: str | None  # None when the dataset has no mask for this image
    label: int  # 0 normal, 1 anomalous
    cls_name: str  # folder/class name as the dataset spells it
    defect_type: str  # "good" for normal images
    split: str  # "train" or "test"


class SampleRow(_SampleRowFields, total=False):
    """One image of a dataset, as every scanner returns it (the six fields above are always present)."""

    # Optional: (left, top, right, bottom) pixel box of img_path and of its mask that forms the sample,
    # e.g. the three horizontal bands of a KSDD image (AdaCLIP's protocol). Absent: the whole image.
    crop: tuple[int, int, int, int]
    # Optional, multi-view datasets (Real-IAD, Real-IAD Variety): the camera view as the file name spells it
    # ("C1".."C5", "C01".."C05") and the physical sample the view belongs to (Real-IAD: the image path's
    # third-from-last + second-from-last components, "OK" + "S0190" -> "OKS0190", as the AdaptCLIP reference
    # keys samples). A sample's score is the max over its views' scores.
    view_id: str
    sample_id: str
    # Optional: True for a row the dataset marks as image-level only (a meta.json row whose mask_path is a folder,
    # the AdaptCLIP reference's convention): it never counts as a missing mask and never enters pixel metrics.
    classification_only: bool


@dataclass
class Batch:
    """A collated batch. Lightning moves dataclass batches between devices field by field."""

    image: torch.Tensor  # [B, 3, H, W], normalised with the backbone's mean/std
    mask: torch.Tensor  # [B, 1, H, W] float in {0, 1}; zeros where has_mask is False
    has_mask: torch.Tensor  # [B] bool: False for image-level-only datasets
    label: torch.Tensor  # [B] long: 0 normal, 1 anomalous (derived from the mask where only masks exist)
    cls_name: list[str]  # class folder names
    prompt_name: list[str]  # class names as they enter text prompts
    dataset: list[str]  # dataset names (`data=` names)
    path: list[str]  # image paths
    # AdaptCLIP training: one normal image of each query's class, [B, 3, H, W]; None otherwise.
    normal_image: torch.Tensor | None = None
    # Multi-view datasets (SampleRow.view_id / sample_id): per image its view and the physical sample it shows,
    # "" for images without a view; None when no image of the batch has a view.
    view_id: list[str] | None = None
    view_sample_id: list[str] | None = None
    # Per image its defect_type ("good" for normal images); None where the batch source does not carry it.
    defect_type: list[str] | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def subset(self, index: slice) -> Batch:
        """The samples at `index` as a batch of their own (e.g. one image: batch.subset(slice(i, i + 1)))."""
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                        for f in fields(self)})


@dataclass
class AnomalyOutput:
    """What every model returns at test time."""

    # [B, H, W] at input resolution, smoothed; in [0, 1], except unclamped few-shot AdaptCLIP: [0, 4/3],
    # as its reference (the module's map_upper_bound; the test loop divides by it for the metrics)
    anomaly_map: torch.Tensor
    score: torch.Tensor  # [B] in [0, 1] (unclamped few-shot AdaptCLIP: [0, 8/7])
    raw_map: torch.Tensor | None = None  # [B, H, W]: anomaly_map before the gaussian smoothing (predict save_maps=raw)
