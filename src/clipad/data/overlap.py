"""Samples a run would both train and test (or validate) on: the same file, seen through any path.

`data=folder 'data.train=[folder]'` trains on the target's own test images (training datasets use their
test split, data.train_split); a meta.json or a symlinked root can do the same under another name.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # clipad.data.batch imports torch
    from clipad.data.batch import SampleRow

EXAMPLES = 3  # files named in the message


def sample_key(row: SampleRow) -> tuple[str, tuple[int, ...]]:
    """The file behind a row (symlinks and relative paths resolved), plus its crop box (KSDD bands)."""
    return os.path.realpath(row["img_path"]), tuple(row.get("crop", ()))


def shared_samples(train_rows: Sequence[SampleRow], eval_rows: Sequence[SampleRow]) -> list[str]:
    """Image paths (as the evaluation rows name them) of the samples that are in both, in row order."""
    training = {sample_key(row) for row in train_rows}
    return [row["img_path"] for row in eval_rows if sample_key(row) in training]


def overlap_message(shared: Sequence[str], train_name: str, train_split: str, eval_name: str, role: str) -> str:
    more = len(shared) - EXAMPLES
    examples = ", ".join(shared[:EXAMPLES]) + (f" and {more} more" if more > 0 else "")
    return (
        f"{len(shared)} images of {role} dataset {eval_name!r} are also training samples of {train_name!r} "
        f"(its '{train_split}' split, data.train_split), e.g. {examples}"
    )
