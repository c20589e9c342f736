"""Shared fixtures: one synthetic dataset per test session, offline settings for every test."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A data dir holding the embedded synthetic dataset (generated once, ~10 s)."""
    from clipad.data.synthetic import ensure_synthetic

    data_dir = tmp_path_factory.mktemp("clipad_data")
    ensure_synthetic(data_dir / "synthetic")
    return data_dir
