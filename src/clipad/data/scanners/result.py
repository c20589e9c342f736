"""What a scanner returns: the sample table plus the files it could not pair (for `clipad.data.inspect`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # clipad.data.batch imports torch: keep scanning (and inspect) light
    from clipad.data.batch import SampleRow


class UnpairedFile(NamedTuple):
    """A file on disk that belongs to no sample: a mask without its image, an image without its label/mask."""

    path: str
    cls_name: str
    split: str


@dataclass
class Scan:
    rows: list[SampleRow] = field(default_factory=list)
    unpaired: list[UnpairedFile] = field(default_factory=list)
    empty_classes: dict[str, str] = field(default_factory=dict)  # class folder without any image -> its path

    def add(
        self,
        img: Path,
        mask: Path | None,
        label: int,
        cls_name: str,
        defect_type: str,
        split: str,
        crop: tuple[int, int, int, int] | None = None,
        view_id: str | None = None,
        sample_id: str | None = None,
    ) -> None:
        row: SampleRow = {
            "img_path": str(img),
            "mask_path": None if mask is None else str(mask),
            "label": int(label),
            "cls_name": cls_name,
            "defect_type": defect_type,
            "split": split,
        }
        if crop is not None:
            row["crop"] = crop
        if view_id is not None:
            row["view_id"] = view_id
        if sample_id is not None:
            row["sample_id"] = sample_id
        self.rows.append(row)

    def add_unpaired(self, paths: list[Path], cls_name: str, split: str) -> None:
        self.unpaired.extend(UnpairedFile(str(p), cls_name, split) for p in paths)
