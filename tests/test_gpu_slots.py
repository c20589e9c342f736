"""hydra/launcher=local_gpus: each sweep job holds its own GPU group (clipad.gpu_slots), on CPU here."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_scale_out import FAST, METRIC_TOLERANCE, REPO, SCORE_TOLERANCE, class_rows, read_scores, run

from clipad.errors import ConfigError
from clipad.gpu_slots import GpuSlotCallback, acquire_slot, device_slots, parse_gpus


def test_gpus_split_into_disjoint_groups():
    assert parse_gpus("0, 1,2,3") == [0, 1, 2, 3] and parse_gpus(5) == [5] and parse_gpus([2, 3]) == [2, 3]
    assert device_slots([0, 1, 2, 3, 4, 5, 6, 7], 1) == [[g] for g in range(8)]
    assert device_slots([0, 1, 2, 3, 4, 5, 6, 7], 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="groups of gpus_per_job=2"):
        device_slots([0, 1, 2], 2)
    with pytest.raises(ConfigError, match="twice"):
        device_slots([0, 0], 1)
    with pytest.raises(ConfigError, match="must be >= 1"):
        device_slots([0], 0)


def test_a_slot_is_never_held_twice_and_a_waiting_job_gets_the_freed_one(tmp_path):
    slots = device_slots([0, 1, 2, 3], 2)
    first = acquire_slot(slots, tmp_path, first=0)
    second = acquire_slot(slots, tmp_path, first=0)  # slot 0 is held: the next free one
    assert (first.devices, second.devices) == ([0, 1], [2, 3])
    third: list = []
    waiter = threading.Thread(target=lambda: third.append(acquire_slot(slots, tmp_path, poll_seconds=0.05)))
    waiter.start()
    time.sleep(0.3)
    assert third == []  # both slots held: the third job waits
    second.release()
    waiter.join(timeout=5)
    assert [held.devices for held in third] == [[2, 3]]
    first.release()
    third[0].release()


def test_callback_sets_the_jobs_devices_and_gives_the_slot_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    config = OmegaConf.create({"hydra": {"job": {"num": 1}}})
    callback = GpuSlotCallback(gpus="4,5,6,7", gpus_per_job=2, lock_dir=str(tmp_path))
    callback.on_job_start(config)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"  # job 1 starts looking at slot 1
    other = GpuSlotCallback(gpus="4,5,6,7", gpus_per_job=2, lock_dir=str(tmp_path))
    other.on_job_start(config)  # same job number, slot 1 held: it takes slot 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"
    callback.on_job_end(config, None)
    other.on_job_end(config, None)
    again = acquire_slot(device_slots([4, 5, 6, 7], 2), Path(tmp_path), first=1)
    assert again.devices == [6, 7]  # released by on_job_end
    again.release()


def test_two_parallel_jobs_hold_distinct_gpus_and_match_the_sequential_sweep(tmp_path, synthetic_data_dir,
                                                                              monkeypatch):
    sweep = ["-m", *FAST, "logger=csv", "trainer=cpu", "prompt.length=1,2"]
    parallel, sequential = tmp_path / "parallel", tmp_path / "sequential"
    run([str(REPO / "train.py"), *sweep, f"hydra.sweep.dir={sequential}"], synthetic_data_dir, tmp_path)
    monkeypatch.setenv("CLIPAD_GPUS", "0,1")  # no GPU here: the devices are only named, the jobs run on CPU
    run([str(REPO / "train.py"), *sweep, "hydra/launcher=local_gpus", f"hydra.sweep.dir={parallel}"],
        synthetic_data_dir, tmp_path)
    logs = [(parallel / job / "train.log").read_text() for job in ("0", "1")]
    devices = sorted(line.split("CUDA_VISIBLE_DEVICES=")[1].strip() for log in logs for line in log.splitlines()
                     if "CUDA_VISIBLE_DEVICES=" in line)
    assert devices == ["0", "1"]  # one GPU each, never the same one
    for job in ("0", "1"):
        # The suite's tolerances (tests/test_scale_out.py): the jobs may run with other thread counts.
        one, two = read_scores(sequential / job / "image_scores.csv"), read_scores(parallel / job / "image_scores.csv")
        assert one.keys() == two.keys() and len(one) > 0
        for path, (cls, label, score) in one.items():
            assert two[path][:2] == (cls, label) and abs(two[path][2] - score) <= SCORE_TOLERANCE, path
        for a, b in zip(class_rows(sequential / job / "results.csv"), class_rows(parallel / job / "results.csv"),
                        strict=True):
            for metric in (k for k in a if k.startswith(("image_", "pixel_")) and a[k]):
                assert abs(float(a[metric]) - float(b[metric])) <= METRIC_TOLERANCE, (job, a["class"], metric)
