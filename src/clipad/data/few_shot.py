"""Few-shot normal prompts: k normal images per class drawn as the AdaptCLIP reference does.

Draws are with replacement from the class's normal images of the train split (the test split's when the
dataset has no train split), by a generator seeded with the run's few_shot_seed for every class, so a class's
draw does not depend on which other classes run. The chosen paths are recorded in a JSON file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from clipad.data.batch import SampleRow
from clipad.data.catalog import DatasetError


def prompt_pool(rows: Sequence[SampleRow], cls_name: str, dataset: str) -> tuple[list[SampleRow], str]:
    """The class's normal rows to draw from (sorted, so draws are reproducible) and the split they come from."""
    for split in ("train", "test"):
        pool = [r for r in rows if r["cls_name"] == cls_name and r["split"] == split and r["label"] == 0]
        if pool:
            return sorted(pool, key=lambda r: (r["img_path"], tuple(r.get("crop", ())))), split
    raise DatasetError(
        f"few-shot prompts need normal images of class {cls_name!r} of dataset {dataset!r}, but it has none "
        "(pixel-only datasets such as isic/clinicdb/colondb/tn3k have no normal images): run it with shots=0."
    )


def draw_prompts(pool: Sequence[SampleRow], shots: int, seed: int) -> list[SampleRow]:
    """`shots` rows drawn with replacement by a generator seeded with `seed`."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1 to draw prompts, got {shots}")
    generator = torch.Generator().manual_seed(int(seed))
    return [pool[i] for i in torch.randint(len(pool), (shots,), generator=generator).tolist()]


def write_prompt_record(path: Path, record: Mapping) -> None:
    """Write the JSON record atomically (DDP ranks may write the same file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(record, out, indent=2)
    os.replace(tmp, path)
