"""Few-shot normal prompts: k normal images per class drawn as the AdaptCLIP reference does.

Draws are with replacement from the class's normal images of the train split (the test split's when the
dataset has no train split), by a generator seeded with the run's few_shot_seed for every class, so a class's
draw does not depend on which other classes run. The chosen paths are recorded in a JSON file.

Multi-view datasets (rows with a view_id: Real-IAD, Real-IAD Variety) are drawn per class and per view, as the
AdaptCLIP reference does: the seed is reset before each (class, view) pair and k indices are drawn with
torch.randint among that view's rows, with replacement.
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


def view_prompt_pools(rows: Sequence[SampleRow], cls_name: str, dataset: str) -> dict[str, list[SampleRow]]:
    """The class's prompt pool split by view (views sorted by name, rows in prompt_pool's order)."""
    pool, _ = prompt_pool(rows, cls_name, dataset)
    unviewed = [r["img_path"] for r in pool if not r.get("view_id")]
    if unviewed:
        raise DatasetError(
            f"per-view prompts need a view_id on every row, but {len(unviewed)} normal images of class {cls_name!r} "
            f"of dataset {dataset!r} have none, e.g. {unviewed[:2]}"
        )
    views: dict[str, list[SampleRow]] = {}
    for row in pool:
        views.setdefault(row["view_id"], []).append(row)
    return dict(sorted(views.items()))


def draw_view_prompts(pools: Mapping[str, Sequence[SampleRow]], shots: int, seed: int) -> dict[str, list[SampleRow]]:
    """`shots` rows per view, each view drawn by a generator freshly seeded with `seed` (the reference's
    torch.manual_seed(seed) before every (class, view) pair; a private generator leaves torch's global one alone)."""
    return {view: draw_prompts(pool, shots, seed) for view, pool in pools.items()}


def write_prompt_list(path: Path, draws: Mapping[str, Mapping[str, Sequence[SampleRow]]]) -> None:
    """The `*_prompts.txt` list: one drawn image path per line, classes in the given order, then views, then
    draws (UNVERIFIED against the reference's file: its format is not documented in the notes clipad keeps).
    `draws` maps class -> view -> drawn rows."""
    lines = [row["img_path"] for views in draws.values() for rows in views.values() for row in rows]
    _write_atomically(path, "".join(line + "\n" for line in lines))


def write_prompt_record(path: Path, record: Mapping) -> None:
    """Write the JSON record atomically (DDP ranks may write the same file)."""
    _write_atomically(path, json.dumps(record, indent=2))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(tmp, path)
