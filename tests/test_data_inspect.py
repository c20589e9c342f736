"""`python -m clipad.data.inspect`: per-class counts, non-zero exit with the reason, nothing written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_data_fixtures import make_mvtec, make_visa

from clipad.data.catalog import DatasetError, load_dataset_config
from clipad.data.inspect import inspect_dataset


def run_cfg(name: str, data_dir: Path, **data_changes):
    data = OmegaConf.merge(load_dataset_config(name), data_changes)
    return OmegaConf.create({"data": data, "paths": {"data_dir": str(data_dir)}})


def table_rows(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines[1].splitlines()[1:]]


def test_counts_per_class_and_split(tmp_path):
    make_mvtec(tmp_path / "mvtec", missing_mask=True)
    lines: list[str] = []
    with pytest.raises(DatasetError, match="have no mask"):  # missing_mask=error: the root is not usable
        inspect_dataset(run_cfg("mvtec", tmp_path, classes=["bottle", "screw"]), emit=lines.append)
    assert lines[1].splitlines()[0].split() == ["class", "split", "normal", "anomalous", "masks", "unpaired"]
    assert table_rows(lines) == [
        ["bottle", "train", "2", "0", "0", "0"],
        ["bottle", "test", "1", "3", "2", "2"],  # 009_mask.png has no image, 002.png no mask
        ["screw", "train", "1", "0", "0", "0"],
        ["screw", "test", "1", "1", "1", "1"],  # ground_truth/oldtype/000_mask.png
    ]
    lines.clear()
    cfg = run_cfg("mvtec", tmp_path, classes=["screw"], missing_mask="image_only")
    assert inspect_dataset(cfg, emit=lines.append) == 2
    assert table_rows(lines) == [["screw", "train", "1", "0", "0", "0"], ["screw", "test", "1", "1", "1", "1"]]
    assert lines[-1] == "ok: 2 test samples in 1 classes"


def test_visa_counts(tmp_path):
    make_visa(tmp_path / "visa")
    lines: list[str] = []
    inspect_dataset(run_cfg("visa", tmp_path, classes=["candle"]), emit=lines.append)
    assert table_rows(lines) == [["candle", "train", "2", "0", "0", "0"], ["candle", "test", "1", "2", "2", "1"]]


def test_command_exit_status_and_writes_nothing(tmp_path):
    make_mvtec(tmp_path / "data/mvtec")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = [sys.executable, "-m", "clipad.data.inspect", "data=mvtec", f"paths.data_dir={tmp_path / 'data'}"]
    ok = subprocess.run([*command, "data.classes=[bottle,screw]"], cwd=cwd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "bottle  test" in ok.stdout and "ok: 5 test samples in 2 classes" in ok.stdout
    broken = subprocess.run([*command, "data.classes=[bottle,cable]"], cwd=cwd, capture_output=True, text=True, check=False)
    assert broken.returncode != 0
    assert "['cable']" in broken.stderr and "mvtec.com" in broken.stderr and "Traceback" not in broken.stderr
    assert list(cwd.iterdir()) == []  # no run dir, no .hydra/, no log file
