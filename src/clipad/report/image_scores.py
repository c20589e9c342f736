"""image_scores.csv: every test image's score, label and class, gathered from all DDP ranks.

The results table condenses these into metrics; the file keeps what the metrics were computed from, so a
run can be checked image by image (and a threshold chosen on it) without re-running the model.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import torch.distributed as dist

COLUMNS = ("dataset", "class", "path", "label", "score")


class ImageScore(TypedDict):
    dataset: str
    cls_name: str
    path: str
    label: int
    score: float


def gather_image_scores(records: list[ImageScore]) -> list[ImageScore]:
    """Every rank's records (all ranks must call this), in (dataset, class, path) order on every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[ImageScore] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part or []]
    return sorted(records, key=lambda r: (r["dataset"], r["cls_name"], r["path"]))


def write_image_scores(records: Sequence[ImageScore], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow([r["dataset"], r["cls_name"], r["path"], r["label"], repr(r["score"])])


def read_image_scores(path: Path) -> list[ImageScore]:
    with open(path, newline="") as f:
        return [
            ImageScore(dataset=row["dataset"], cls_name=row["class"], path=row["path"], label=int(row["label"]),
                       score=float(row["score"]))
            for row in csv.DictReader(f)
        ]
